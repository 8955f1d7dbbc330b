"""Judge pieces without a server: reply validation, settings, redaction, cache, aggregation."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pulse_tasks.scoring import judge
from pulse_tasks.scoring.judge.cache import JudgeCache, cache_key
from pulse_tasks.scoring.judge.costs import cost_usd
from pulse_tasks.scoring.judge.rubrics import (
    CRITERIA,
    InvalidReply,
    build_messages,
    builtin_rubric,
    parse_reply,
)
from pulse_tasks.scoring.judge.settings import ENV_VARS as JUDGE_ENV_VARS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in JUDGE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ECGBENCH_JUDGE_CACHE", "off")


# ------------------------------------------------------------------ reply validation

VALID_REPLIES = [
    (('{"Diagnosis": {"Score": 8, "Explanation": "x"}, "Waveform": {"Score": 5, "Explanation": "y"}, '
      '"Rhythm": {"Score": 10, "Explanation": "z"}}'), (8, 5, 10)),
    ('{"Diagnosis": 7, "Form": 4, "Rhythm": 9}', (7, 4, 9)),  # reference spelling "Form", bare numbers
    ('{"diagnosis": {"score": 2}, "FORM": {"SCORE": 3}, "rhythm": {"Score": "6"}}', (2, 3, 6)),
    ('Here you go:\n```json\n{"Diagnosis": 1, "Waveform": 0, "Rhythm": "7/10"}\n```', (1, 0, 7)),
    ('{"Diagnosis": 6.5, "Waveform": 10.0, "Rhythm": 0}', (6.5, 10, 0)),
    # what judge models send besides the asked-for shape: text scores, "score" in the key, a wrapper, fences
    ('{"Diagnosis": "8 out of 10", "Waveform": " 4 / 10.0 ", "Rhythm": "9.5"}', (8, 4, 9.5)),
    ('{"diagnosis_score": 3, "Waveform Score": {"score": "5/10"}, "RHYTHM-SCORE": 7}', (3, 5, 7)),
    ('```JSON\n{"scores": {"Diagnosis": {"Score": 2}, "Form": 6, "Rhythm": "1"}}\n```', (2, 6, 1)),
]


@pytest.mark.parametrize("text,expected", VALID_REPLIES)
def test_parse_reply_accepts_reference_spellings(text: str, expected: tuple[float, ...]) -> None:
    verdict = parse_reply("report", text)
    assert tuple(verdict.criteria.values()) == tuple(float(x) for x in expected)
    assert list(verdict.criteria) == list(CRITERIA["report"])
    assert verdict.score == pytest.approx(sum(expected) / 3 * 10)


def test_parse_reply_arena_keys() -> None:
    text = '{"accuracy": {"Score": 9}, "Completeness": 6, "instruction_adherence": {"Score": 3, "Explanation": "e"}}'
    verdict = parse_reply("arena", text)
    assert verdict.criteria == {"Accuracy": 9.0, "Completeness": 6.0, "Instruction Adherence": 3.0}
    assert verdict.score == pytest.approx(60.0)
    assert verdict.explanations["Instruction Adherence"] == "e"


INVALID_REPLIES = [
    ("not json at all", "not a JSON object"),
    ('{"Diagnosis": 8, "Waveform": 5}', "missing score(s) for Rhythm"),
    ('{"Diagnosis": 11, "Waveform": 5, "Rhythm": 5}', "outside 0-10"),
    ('{"Diagnosis": -1, "Waveform": 5, "Rhythm": 5}', "outside 0-10"),
    ('{"Diagnosis": true, "Waveform": 5, "Rhythm": 5}', "boolean"),
    ('{"Diagnosis": "high", "Waveform": 5, "Rhythm": 5}', "not a number"),
    ('{"Diagnosis": NaN, "Waveform": 5, "Rhythm": 5}', "not a number"),
    ('{"Diagnosis": {"Explanation": "no score"}, "Waveform": 5, "Rhythm": 5}', "no Score field"),
    ('{"Diagnosis": 5, "Waveform": 5, "Form": 6, "Rhythm": 5}', "scored twice"),
    ('[8, 5, 10]', "not a JSON object"),
    ("   ", "reply is empty"),
    ('{"Diagnosis": "8/100", "Waveform": 5, "Rhythm": 5}', "not a number"),  # another scale
    ('{"Diagnosis": "80%", "Waveform": 5, "Rhythm": 5}', "not a number"),
    ('{"Diagnosis": 80, "Waveform": 70, "Rhythm": 60}', "outside 0-10"),  # a 0-100 scale
    ('{"a": {"Diagnosis": 8}, "b": {"Waveform": 5, "Rhythm": 5}}', "missing score(s)"),  # two wrappers: ambiguous
    ('{"Diagnosis": 8, "Diagnosis Score": 7, "Waveform": 5, "Rhythm": 5}', "scored twice"),
]


@pytest.mark.parametrize("text,message", INVALID_REPLIES)
def test_parse_reply_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidReply, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_reply("report", text)


def test_rubrics_carry_the_protocol() -> None:
    report, arena = builtin_rubric("report"), builtin_rubric("arena")
    for name in ("Diagnosis", "Waveform", "Rhythm", "10", "5", "0", "ground truth", "length", "JSON"):
        assert name in report
    for name in ("Accuracy", "Completeness", "Instruction Adherence", "both turns", "length", "JSON"):
        assert name in arena
    messages = build_messages("arena", arena, ["q1", "q2"], ["a1", "a2"], ["r1", "r2"])
    user = messages[1]["content"]
    assert user.index("q1") < user.index("a1") < user.index("r1") < user.index("q2") < user.index("a2") < user.index("r2")
    assert "JSON" in user  # JSON mode needs the word even with a custom rubric


# ------------------------------------------------------------------ settings

def test_settings_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-aaaaaaaaaaaa")
    monkeypatch.setenv("ECGBENCH_JUDGE_CONCURRENCY", "7")
    monkeypatch.setenv("ECGBENCH_JUDGE_TIMEOUT", "12.5")
    monkeypatch.setenv("ECGBENCH_JUDGE_MAX_CALLS", "100")
    s = judge.settings_from_env()
    assert (s.provider, s.model, s.concurrency, s.timeout_s, s.max_calls) == ("openai", "gpt-4o-2024-08-06", 7, 12.5, 100)
    assert s.host == "api.openai.com" and s.cache_path is None
    assert "sk-secret" not in repr(s)
    judge.check_configured(s)
    assert judge.settings_from_env(model="gpt-4o-mini", concurrency=None).model == "gpt-4o-mini"


def test_settings_azure_and_compatible(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://myres.openai.azure.com/")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azkey-123456789")
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-06-01")
    monkeypatch.setenv("ECGBENCH_JUDGE_MODEL", "my-gpt4o-deployment")
    s = judge.settings_from_env()
    assert (s.provider, s.azure_endpoint, s.api_version, s.model, s.host) == (
        "azure", "https://myres.openai.azure.com", "2024-06-01", "my-gpt4o-deployment", "myres.openai.azure.com")
    judge.check_configured(s)
    monkeypatch.setenv("ECGBENCH_JUDGE_BASE_URL", "http://user:pw@gpu-box:8000/v1?token=abc")
    monkeypatch.setenv("ECGBENCH_JUDGE_CACHE", str(tmp_path / "c.sqlite"))
    s = judge.settings_from_env()
    assert s.provider == "compatible" and s.host == "gpu-box:8000" and s.cache_path == tmp_path / "c.sqlite"
    judge.check_configured(s)  # vLLM without --api-key needs no key


def test_check_configured_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(judge.JudgeNotConfiguredError, match="OPENAI_API_KEY.*AZURE_OPENAI_ENDPOINT.*ECGBENCH_JUDGE_BASE_URL"):
        judge.check_configured(judge.settings_from_env())
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://x.openai.azure.com")
    with pytest.raises(judge.JudgeNotConfiguredError, match="AZURE_OPENAI_API_KEY"):
        judge.check_configured(judge.settings_from_env())
    monkeypatch.setenv("ECGBENCH_JUDGE_CONCURRENCY", "lots")
    with pytest.raises(ValueError, match="ECGBENCH_JUDGE_CONCURRENCY"):
        judge.settings_from_env()


def test_score_item_without_judge_is_failed_not_zero() -> None:
    doc = {"id": "a", "questions": ["q"], "answers": ["gold"]}
    rec = judge.score_item("ptb-test-report", doc, "report")
    assert rec["status"] == "failed" and rec["score"] is None and "OPENAI_API_KEY" in rec["error"]
    with pytest.raises(ValueError, match="not by the LLM judge"):
        judge.score_item("ptb-test", doc, "x")


def test_redact() -> None:
    key = "sk-proj-abcdefghijklmnop1234"
    text = f"Incorrect API key provided: {key}. Authorization: Bearer {key}; api_key=zzzzzzzzzzzz other-secret-xyz"
    out = judge.redact(text, ("other-secret-xyz",))
    assert key not in out and "zzzzzzzzzzzz" not in out and "other-secret-xyz" not in out and "Incorrect API key" in out


# ------------------------------------------------------------------ cache

def test_cache_roundtrip_threads_and_key(tmp_path: Path) -> None:
    cache = JudgeCache(tmp_path / "sub" / "cache.sqlite")
    msgs = [{"role": "system", "content": "rubric"}, {"role": "user", "content": "gold / candidate"}]
    dec = {"temperature": 0.0, "max_tokens": 10}
    key = cache_key("m", msgs, dec)
    assert key != cache_key("m2", msgs, dec) and key != cache_key("m", msgs, {**dec, "temperature": 0.5})
    assert key != cache_key("m", [msgs[0], {"role": "user", "content": "gold / other"}], dec)

    def write(i: int) -> None:
        for j in range(20):
            assert cache.put(f"{i}-{j}", "m", f"reply {i} {j}", {"prompt_tokens": j})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 80 and cache.get("3-7") == ("reply 3 7", {"prompt_tokens": 7}) and cache.get("nope") is None
    cache.close()


def test_cache_concurrent_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    code = ("import sys; from pulse_tasks.scoring.judge.cache import JudgeCache; c = JudgeCache(sys.argv[1]); "
            "[c.put(f'{sys.argv[2]}-{i}', 'm', 'r', {}) or sys.exit(1) for i in range(100)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(p)]) for p in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert len(JudgeCache(path)) == 200


def test_cache_failure_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cache = JudgeCache(blocker / "cache.sqlite")  # parent is a file: cannot be created
    assert cache.disabled_reason and cache.get("k") is None and cache.put("k", "m", "r", {}) is False


# ------------------------------------------------------------------ aggregation

def _rec(status: str, score: float | None, crit: dict[str, float] | None = None, **kw: object) -> dict:
    return {"id": "x", "status": status, "score": score, "criteria": crit or {},
            "judge": {"model": "gpt-4o-2024-08-06", "rubric_sha": "s"},
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "api_calls": 1}, **kw}


def test_aggregate_excludes_and_counts_failures() -> None:
    records = [_rec("ok", 80.0, {"Diagnosis": 8, "Waveform": 8, "Rhythm": 8}),
               _rec("ok", 40.0, {"Diagnosis": 2, "Waveform": 4, "Rhythm": 6}),
               _rec("failed", None, error="HTTP 500"), _rec("skipped", None, error="budget")]
    agg = judge.aggregate(records)
    assert (agg["n"], agg["n_judged"], agg["n_failed"], agg["n_skipped"]) == (4, 2, 1, 1)
    assert agg["score"] == pytest.approx(60.0) and agg["flagged"] is True
    assert agg["criteria"] == {"Diagnosis": 50.0, "Waveform": 60.0, "Rhythm": 70.0}
    assert agg["stderr"] == pytest.approx(20.0)
    assert agg["usage"]["prompt_tokens"] == 4000
    assert agg["cost_usd"] == pytest.approx(4000 * 2.5e-6 + 400 * 10e-6)
    clean = judge.aggregate(records[:2])
    assert clean["flagged"] is False and clean["n_failed"] == 0


def test_aggregate_all_failed_is_none_and_unknown_cost() -> None:
    agg = judge.aggregate([_rec("failed", None)])
    assert agg["score"] is None and agg["n_judged"] == 0 and agg["flagged"]
    assert cost_usd("my-local-llama", 10, 10) == "unknown"
    mixed = judge.aggregate([_rec("ok", 50.0), {**_rec("ok", 70.0), "judge": {"model": "other"}}])
    assert mixed["flagged"] and "mixed" in mixed["judge"]
    assert not math.isnan(json.loads(json.dumps(mixed))["score"])


@pytest.mark.parametrize("doc,responses", [
    (None, "x"),
    ({"id": "a", "questions": ["q"], "answers": []}, "x"),
    ({"id": "a", "questions": ["q"], "answers": ["g"]}, None),
    ({"id": "a", "questions": ["q"], "answers": ["g"]}, ["two", "turns"]),
    ({"id": "a", "questions": ["q"], "answers": ["g"]}, 42),
])
def test_score_item_never_raises_on_bad_input(doc: object, responses: object) -> None:
    s = judge.settings_from_env(base_url="http://127.0.0.1:9/v1")  # never contacted: input is checked first
    rec = judge.score_item("ptb-test-report", doc, responses, s)  # type: ignore[arg-type]
    assert rec["status"] == "failed" and rec["score"] is None and rec["error"].startswith("invalid input")


def test_missing_prompt_file_is_reported(tmp_path: Path) -> None:
    s = judge.settings_from_env(base_url="http://127.0.0.1:9/v1", prompt_file=tmp_path / "nope.txt")
    with pytest.raises(judge.JudgeNotConfiguredError, match="prompt file not found"):
        judge.check_configured(s)
    rec = judge.score_item("ptb-test-report", {"id": "a", "questions": ["q"], "answers": ["g"]}, "x", s)
    assert rec["status"] == "failed" and "nope.txt" in rec["error"]


def test_env_vars_lists_every_variable_settings_reads() -> None:
    import inspect
    import re

    from pulse_tasks.scoring.judge import settings

    source = inspect.getsource(settings)
    read = set(re.findall(r'_env\("([A-Z_]+)"\)|environ\.get\("(ECGBENCH_[A-Z_]+)"\)', source))
    names = {a or b for a, b in read}
    # a key variable handed to compatible_key (which reads it through _env) counts as read
    names |= set(re.findall(r'compatible_key\([^)]*?"([A-Z_]+)"', source))
    assert names == set(settings.ENV_VARS)


def test_users_openai_key_goes_only_to_its_own_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in judge.settings.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-user-key-123456789")
    other = judge.settings_from_env(base_url="http://judge.example:8000/v1")
    assert other.api_key == judge.settings.PLACEHOLDER_KEY and other.key_source == "none"
    assert "not sent to a separate judge host" in judge.settings.key_notice(other)
    monkeypatch.setenv("ECGBENCH_JUDGE_BASE_URL", "http://judge.example:8000/v1")
    assert judge.settings_from_env().api_key == judge.settings.PLACEHOLDER_KEY
    monkeypatch.setenv("ECGBENCH_JUDGE_API_KEY", "judge-key-abcdefgh")
    own = judge.settings_from_env()
    assert own.api_key == "judge-key-abcdefgh" and own.key_source == "ECGBENCH_JUDGE_API_KEY"
    monkeypatch.delenv("ECGBENCH_JUDGE_API_KEY")
    monkeypatch.delenv("ECGBENCH_JUDGE_BASE_URL")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://proxy.example/v1")  # the user's own OpenAI endpoint
    assert judge.settings_from_env().api_key == "sk-user-key-123456789"
    assert judge.settings_from_env(base_url="https://api.openai.com/v1").api_key == judge.settings.PLACEHOLDER_KEY
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert judge.settings_from_env(base_url="https://api.openai.com/v1").api_key == "sk-user-key-123456789"
    assert "sk-user" not in judge.settings.key_notice(judge.settings_from_env())


def test_lmms_eval_safe_records_survive_clt_aggregation() -> None:
    """lmms-eval 0.7.3 takes every per-item `score` into a CLT standard error: unjudged items carry none."""
    import numpy as np

    from pulse_tasks.glue.hooks import lmms_eval_safe

    ok = {"id": "a", "status": "ok", "score": 70.0}
    others = [{"id": s, "status": s, "score": None} for s in ("failed", "skipped", "deferred")]
    safe = [lmms_eval_safe(r) for r in [ok, *others]]
    assert safe[0] == ok and all("score" not in r for r in safe[1:])
    scores = [r["score"] for r in safe if "score" in r]  # what calculate_clt_aggregate_metric collects
    assert np.isfinite(np.std(scores + [50.0], ddof=1))
    agg = judge.aggregate(safe)
    assert (agg["n"], agg["n_judged"], agg["n_failed"], agg["n_skipped"], agg["n_deferred"]) == (4, 1, 1, 1, 1)
    assert agg["score"] == 70.0 and agg["flagged"]
