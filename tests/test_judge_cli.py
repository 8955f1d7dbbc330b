"""`ecgbench judge` end to end: real data loader (JSON layout), fake judge server, real openai client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pulse_app.cli import main
from pulse_tasks.scoring import judge
from pulse_tasks.scoring.judge.settings import ENV_VARS as JUDGE_ENV_VARS

try:
    from judge_server import (
        FakeJudgeServer,
        Reply,
        completion,
        marker_responder,
        verdict_json,
    )
except ImportError:  # tests/ imported as a package
    from tests.judge_server import (
        FakeJudgeServer,
        Reply,
        completion,
        marker_responder,
        verdict_json,
    )

N_REPORTS = 6


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in JUDGE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    judge.reset_runtimes()
    yield
    judge.reset_runtimes()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """README-style JSON layout: <config>.json + images/ (the loader does not open images)."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    reports = [{"id": f"ptb-{i}", "image": f"ptb/{i}.png",
                "conversations": [{"from": "human", "value": "<image>\nWrite the report."},
                                  {"from": "gpt", "value": f"Sinus rhythm, item {i}."}]} for i in range(N_REPORTS)]
    arena = [{"id": f"arena-{i}", "image": f"arena/{i}.png",
              "conversations": [{"question": "Describe the rhythm.", "answer": "Atrial flutter."},
                                {"question": "Treatment?", "answer": "Rate control."}]} for i in range(2)]
    (root / "ptb-test-report.json").write_text(json.dumps(reports))
    (root / "arena.json").write_text(json.dumps(arena))
    return root


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any] | None, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_judge_lmms_eval_samples(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "samples.jsonl"
    with samples.open("w") as f:
        for i in range(N_REPORTS):  # doc_id only (no id in the line): matched by position
            f.write(json.dumps({"doc_id": i, "target": "x", "resps": [[f"r{i} SCORES=8,6,4"]],
                                "filtered_resps": [f"r{i} SCORES=8,6,4"]}) + "\n")
    with FakeJudgeServer() as srv:
        monkeypatch.setenv("ECGBENCH_JUDGE_API_KEY", srv.api_key)  # a separate judge host: its own key
        cache = tmp_path / "cache.sqlite"
        records_out = tmp_path / "records.jsonl"
        argv = ["judge", "--subset", "ptb-test-report", "--data", str(data_dir), "--predictions", str(samples),
                "--judge-base-url", srv.url, "--concurrency", "4", "--cache", str(cache), "--no-progress",
                "--records-out", str(records_out)]
        code, result, err = _run(argv, capsys)
        assert code == 0, err
        assert result is not None
        assert {"subset", "n", "n_judged", "score", "criteria", "judge"} <= set(result)
        assert (result["subset"], result["n"], result["n_judged"]) == ("ptb-test-report", N_REPORTS, N_REPORTS)
        assert result["score"] == pytest.approx(60.0)
        assert result["criteria"] == {"Diagnosis": 80.0, "Waveform": 60.0, "Rhythm": 40.0}
        assert result["judge"]["model"] == "gpt-4o-2024-08-06" and srv.count == N_REPORTS
        # the API key is nowhere: stdout, stderr, records, cache file (WAL files included)
        assert cache.is_file() and len(records_out.read_text().splitlines()) == N_REPORTS
        for blob in [json.dumps(result), err, records_out.read_text()] + \
                [p.read_bytes().decode("latin-1") for p in tmp_path.glob("cache.sqlite*")]:
            assert srv.api_key not in blob
        judge.reset_runtimes()
        code, again, _ = _run(argv, capsys)  # second run: all from the cache
        assert code == 0 and again["score"] == result["score"] and srv.count == N_REPORTS


def test_judge_reference_format_arena_and_estimate(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    preds = tmp_path / "answers.jsonl"
    lines = [{"question_id": "arena-0", "text": "Flutter. SCORES=10,5,0"}, {"question_id": "arena-0", "text": "Rate."},
             {"id": "arena-1", "response": ["AF. SCORES=4,4,4", "Ablation."]}]
    preds.write_text("\n".join(json.dumps(x) for x in lines))
    with FakeJudgeServer() as srv:
        monkeypatch.setenv("ECGBENCH_JUDGE_BASE_URL", srv.url)
        monkeypatch.setenv("ECGBENCH_JUDGE_API_KEY", srv.api_key)
        monkeypatch.setenv("ECGBENCH_JUDGE_CACHE", "off")
        base = ["--subset", "arena", "--data", str(data_dir), "--predictions", str(preds), "--no-progress"]
        code, est, _ = _run(["judge", "estimate", *base], capsys)
        assert code == 0 and srv.count == 0
        assert est["calls"] == 2 and est["approx_prompt_tokens"] > 300 and est["approx_cost_usd"] > 0
        code, result, _ = _run(["judge", *base], capsys)
        assert code == 0 and result["n"] == 2 and result["score"] == pytest.approx(45.0) and srv.count == 2
        assert "Rate." in srv.requests[0]["messages"][1]["content"] + srv.requests[1]["messages"][1]["content"]
        code, capped, _ = _run(["judge", *base, "--max-judge-calls", "1"], capsys)
        assert code == 1 and capped["n_skipped"] == 1 and capped["flagged"] and capped["n_judged"] == 1


def test_judge_not_configured_and_bad_input(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "ptb-0", "response": "x"}))
    code, result, err = _run(["judge", "--subset", "ptb-test-report", "--data", str(data_dir),
                              "--predictions", str(preds)], capsys)
    assert code == 2 and result is None and "OPENAI_API_KEY" in err
    code, _, err = _run(["judge", "--subset", "ptb-test", "--data", str(data_dir), "--predictions", str(preds)], capsys)
    assert code == 2 and "not by the LLM judge" in err
    preds.write_text("{broken")
    code, _, err = _run(["judge", "estimate", "--subset", "arena", "--data", str(data_dir), "--predictions", str(preds)],
                        capsys)
    assert code == 2 and "not valid JSON" in err


def test_judge_wrong_key_cli_fails_fast(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    preds = tmp_path / "p.jsonl"
    preds.write_text("\n".join(json.dumps({"id": f"ptb-{i}", "response": "x"}) for i in range(N_REPORTS)))
    wrong = "sk-definitely-wrong-key-42424242"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    with FakeJudgeServer() as srv:
        code, result, err = _run(["judge", "--subset", "ptb-test-report", "--data", str(data_dir), "--predictions",
                                  str(preds), "--judge-base-url", srv.url, "--no-cache", "--no-progress"], capsys)
        assert code == 1 and srv.count == 1 and result["n_judged"] == 0 and result["score"] is None
        assert "401" in json.dumps(result["errors"]) and wrong not in json.dumps(result) + err


def _samples_line(i: int, subset: str, status: str, response: str) -> dict[str, Any]:
    record = {"id": f"ptb-{i}", "subset": subset, "status": status, "criteria": {}, "judge": {}}
    if status == "ok":
        record.update(score=50.0, criteria={"Diagnosis": 5, "Waveform": 5, "Rhythm": 5})
    return {"doc_id": i, "resps": [[response]], "filtered_resps": [response], "judge_score": record}


def test_judge_later_judges_only_unjudged_items_and_attaches_them(data_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from pulse_tasks.scoring.judge.attached import apply_attached, read_attached

    folder = tmp_path / "out" / "model"
    folder.mkdir(parents=True)
    samples = folder / "20260101_000000_samples_ecgbench_ptb_report.jsonl"
    states = ["ok", "ok", "failed", "skipped", "deferred", "deferred"]
    lines = [_samples_line(i, "ptb-test-report", st, f"report {i} SCORES=8,8,8") for i, st in enumerate(states)]
    samples.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with FakeJudgeServer() as srv:
        monkeypatch.setenv("ECGBENCH_JUDGE_API_KEY", srv.api_key)
        argv = ["judge", "--subset", "ptb-test-report", "--data", str(data_dir), "--predictions", str(samples),
                "--judge-base-url", srv.url, "--no-cache", "--no-progress"]
        code, result, err = _run(argv, capsys)
        assert code == 0 and srv.count == 4, err  # the two judged items are kept, not judged again
        assert (result["already_judged"], result["newly_judged"], result["n_judged"]) == (2, 4, N_REPORTS)
        assert result["score"] == pytest.approx((2 * 50 + 4 * 80) / 6)
        attached = folder / "20260101_000000_judge_ecgbench_ptb_report.jsonl"
        assert result["attached"] == str(attached) and "wrote 4 added judge records" in err
        added = read_attached(attached)
        assert sorted(added) == [f"ptb-{i}" for i in range(2, 6)] and all(r["judge_added"] for r in added.values())
        judge.reset_runtimes()
        code, again, _ = _run(argv, capsys)  # nothing left to judge
        assert code == 0 and srv.count == 4 and again["already_judged"] == N_REPORTS
    # the added records replace unjudged ones only for the response they judged
    records = [x["judge_score"] for x in lines]
    responses = [x["filtered_resps"] for x in lines]
    merged, n_added, mismatched = apply_attached(records, responses, added)
    assert n_added == 4 and not mismatched and all(r["status"] == "ok" for r in merged)
    responses[5] = ["another model's answer"]
    merged, n_added, mismatched = apply_attached(records, responses, added)
    assert n_added == 3 and mismatched == ["ptb-5"] and merged[5]["status"] == "deferred"


def test_judge_later_bad_samples_files(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "x_samples_ecgbench_arena.jsonl"
    samples.write_text(json.dumps(_samples_line(0, "arena", "deferred", "a")) + "\n")
    code, _, err = _run(["judge", "--subset", "ptb-test-report", "--data", str(data_dir), "--predictions", str(samples),
                         "--judge-base-url", "http://127.0.0.1:9/v1"], capsys)
    assert code == 2 and "holds arena items, not ptb-test-report" in err
    good = json.dumps(_samples_line(0, "ptb-test-report", "deferred", "a"))
    samples.write_text(good + "\n" + good[: len(good) // 2])  # a run killed while writing the file
    code, _, err = _run(["judge", "--subset", "ptb-test-report", "--data", str(data_dir), "--predictions", str(samples),
                         "--judge-base-url", "http://127.0.0.1:9/v1"], capsys)
    assert code == 2 and ":2: not valid JSON" in err and "truncated" in err
    # another data version: no line is for an item of this data, so nothing is judged or attached
    samples.write_text(json.dumps({**_samples_line(0, "ptb-test-report", "deferred", "a"), "doc_id": 99}
                                  | {"judge_score": {"id": "ptb-999", "subset": "ptb-test-report", "status": "deferred"}}))
    code, _, err = _run(["judge", "--subset", "ptb-test-report", "--data", str(data_dir), "--predictions", str(samples),
                         "--judge-base-url", "http://127.0.0.1:9/v1"], capsys)
    assert code == 2 and "none of the 1 predictions" in err and "ptb-999" in err
    assert not list(tmp_path.glob("*_judge_*"))
    # the gold-history arena's per-turn lines: no arena conversations to pair up
    gold = tmp_path / "x_samples_ecgbench_arena_gold_history.jsonl"
    turn = {"id": "arena-0", "subset": "arena", "turn": 0, "response": "a", "questions": ["q1", "q2"],
            "answers": ["a1", "a2"], "generation_failed": False}
    gold.write_text(json.dumps({"doc_id": 0, "resps": [["a"]], "filtered_resps": ["a"], "judge_score": turn}) + "\n")
    code, _, err = _run(["judge", "--subset", "arena", "--data", str(data_dir), "--predictions", str(gold),
                         "--judge-base-url", "http://127.0.0.1:9/v1"], capsys)
    assert code == 2 and "samples file of ecgbench_arena_gold_history" in err and "--use_cache" in err


# ---------------------------------------------------------------- judge trouble while judging later

def _samples_file(folder: Path, states: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    samples = folder / "20260101_000000_samples_ecgbench_ptb_report.jsonl"
    lines = [_samples_line(i, "ptb-test-report", st, f"report {i} SCORES=8,8,8") for i, st in enumerate(states)]
    samples.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return samples


def _slow(request: dict[str, Any], n: int) -> Reply:
    return Reply(body=completion(verdict_json(("Diagnosis", "Waveform", "Rhythm"), (8, 8, 8))), delay_s=1.5)


# (responder, server options, extra CLI options, what the printed errors must say, items judged before the trouble)
TROUBLE = {
    "timeout": (_slow, {}, ["--timeout", "0.3"], "no reply within 0.3 s: raise --timeout", 0),
    "429-storm": (lambda r, n: Reply(429, {"error": {"message": "Rate limit reached"}}, headers={"Retry-After": "0"}),
                  {}, [], "rate limited: lower --concurrency", 0),
    "401-no-key": (marker_responder, {"api_key": "sk-the-servers-own-key-1234"}, [],
                   "no API key was sent: set ECGBENCH_JUDGE_API_KEY", 0),
    "5xx": (lambda r, n: Reply(502, "<html>Bad gateway</html>", headers={"Retry-After": "0"}), {}, [],
            "HTTP 502", 0),
    "invalid-json": (lambda r, n: Reply(body=completion("The report looks fine to me.")), {}, [],
                     "reply is not a JSON object (after 3 replies)", 0),
    "out-of-range": (lambda r, n: Reply(body=completion('{"Diagnosis": 80, "Waveform": 70, "Rhythm": 60}')), {}, [],
                     "score 80 is outside 0-10", 0),
    "not-a-chat-api": (lambda r, n: Reply(body="<html>a web page</html>"), {}, [],
                       "not a chat completion", 0),
    "json-but-not-chat": (lambda r, n: Reply(body={"detail": "welcome to the dashboard"}), {}, [],
                          "no 'choices'", 0),
    "dies-mid-run": (marker_responder, {"max_requests": 2}, ["--concurrency", "1"], "unreachable", 2),
    "budget": (marker_responder, {}, ["--max-judge-calls", "1"], "judge call budget of 1 reached", 1),
}


# Troubles every later call would meet too: judging stops after the first call.
STOPS_AT_ONCE = {"401-no-key", "not-a-chat-api", "json-but-not-chat"}


@pytest.mark.parametrize("case", sorted(TROUBLE))
def test_judge_trouble_is_named_answers_kept_and_a_rerun_judges_only_the_rest(
        case: str, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """`ecgbench judge` on a run's samples file while the judge misbehaves: a clear message, exit 1,
    the samples file untouched, what was judged is attached; a rerun against a healthy judge sends
    only the items still unjudged."""
    from pulse_tasks.scoring.judge.attached import read_attached

    responder, server_options, options, message, judged_first = TROUBLE[case]
    samples = _samples_file(tmp_path / "out" / "model", ["ok", "ok", "failed", "skipped", "deferred", "deferred"])
    before = samples.read_bytes()
    monkeypatch.setenv("ECGBENCH_JUDGE_MAX_ATTEMPTS", "2")
    base = ["judge", "--subset", "ptb-test-report", "--data", str(data_dir), "--predictions", str(samples),
            "--no-cache", "--no-progress"]
    with FakeJudgeServer(responder, **{"api_key": None, **server_options}) as srv:
        code, result, err = _run([*base, "--judge-base-url", srv.url, *options], capsys)
        sent = srv.count
    assert code == 1, err
    if case in STOPS_AT_ONCE:
        assert sent == 1 and "judge stopped" in caplog.text
    assert result["already_judged"] == 2 and result["newly_judged"] == judged_first
    assert result["n_judged"] == 2 + judged_first and result["flagged"]
    assert result["n_failed"] + result["n_skipped"] == 4 - judged_first
    assert any(message in e for e in result["errors"]), result["errors"]
    assert samples.read_bytes() == before  # the run's answers stay as lmms-eval wrote them
    added = read_attached(Path(result["attached"]))
    assert sorted(added) == [f"ptb-{i}" for i in range(2, 6)]
    assert all(("score" in r and r["score"] is not None) == (r["status"] == "ok") for r in added.values())

    judge.reset_runtimes()
    with FakeJudgeServer(api_key=None) as healthy:
        code, again, err = _run([*base, "--judge-base-url", healthy.url], capsys)
        assert code == 0, err
        assert healthy.count == 4 - judged_first, "items judged before were judged again"
    assert (again["n_judged"], again["n_failed"], again["n_skipped"]) == (N_REPORTS, 0, 0)
    assert again["score"] == pytest.approx((2 * 50 + 4 * 80) / N_REPORTS)


def test_azure_key_goes_only_to_the_azure_endpoint(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """With OpenAI, Azure and judge-host keys all set: the Azure endpoint gets the Azure key alone, a
    separate judge host (--judge-base-url) gets its own key, and no key reaches another endpoint."""
    azure_key, user_key, host_key = "azure-key-0123456789abcdef", "sk-users-openai-key-777777777", "sk-judge-host-55555555"
    samples = _samples_file(tmp_path / "out", ["deferred"] * N_REPORTS)
    monkeypatch.setenv("OPENAI_API_KEY", user_key)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", azure_key)
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    monkeypatch.setenv("ECGBENCH_JUDGE_MODEL", "ecg-judge-deployment")
    base = ["judge", "--subset", "ptb-test-report", "--data", str(data_dir), "--predictions", str(samples),
            "--no-cache", "--no-progress", "--no-attach"]
    with FakeJudgeServer(api_key=azure_key) as azure, FakeJudgeServer(api_key=host_key) as host:
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", azure.root)
        code, result, err = _run(base, capsys)
        assert code == 0 and result["judge"]["provider"] == "azure" and azure.count == N_REPORTS, err
        assert azure.credentials == [{"api-key": azure_key}] * N_REPORTS  # no Authorization header beside it
        judge.reset_runtimes()
        code, result, err = _run([*base, "--judge-base-url", host.url], capsys)  # no judge-host key yet: none sent
        assert code == 1 and host.count == 1 and "no API key was sent" in json.dumps(result["errors"])
        monkeypatch.setenv("ECGBENCH_JUDGE_API_KEY", host_key)
        judge.reset_runtimes()
        code, result, err = _run([*base, "--judge-base-url", host.url], capsys)
        assert code == 0 and result["judge"]["provider"] == "compatible", err
        assert host.credentials == [{"Authorization": "Bearer EMPTY"}] + [{"Authorization": f"Bearer {host_key}"}] * N_REPORTS
        assert azure.count == N_REPORTS  # the judge-host runs sent nothing to Azure
        seen = json.dumps(azure.credentials + host.credentials)
        assert user_key not in seen and seen.count(azure_key) == N_REPORTS
