"""The judge driven through the real ``openai`` client against a loopback chat-completions server."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

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

REPORT_KEYS = ("Diagnosis", "Waveform", "Rhythm")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in JUDGE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ECGBENCH_JUDGE_CACHE", "off")
    judge.reset_runtimes()
    yield
    judge.reset_runtimes()


def settings_for(srv: FakeJudgeServer, **kw: Any) -> judge.JudgeSettings:
    """Fast-failing settings pointing at the fake server (tiny backoff, short timeout)."""
    base: dict[str, Any] = {"base_url": srv.url, "api_key": srv.api_key, "timeout_s": 2.0, "backoff_base_s": 0.01,
                            "backoff_max_s": 0.05, "max_attempts": 3}
    base.update(kw)
    return judge.settings_from_env(**base)


def report_doc(i: int, gold: str = "Sinus rhythm. Inferior myocardial infarction.") -> dict[str, Any]:
    return {"id": f"r{i}", "subset": "ptb-test-report", "questions": ["Write a report for this ECG."], "answers": [gold]}


def arena_doc(i: int) -> dict[str, Any]:
    return {"id": f"a{i}", "subset": "arena", "questions": ["What rhythm is this?", "And the axis?"],
            "answers": ["Atrial fibrillation.", "Left axis deviation."]}


def scripted(*replies: Reply) -> Any:
    """Responder answering the n-th request with replies[n-1] (the last one repeats)."""
    def respond(request: dict[str, Any], n: int) -> Reply:
        return replies[min(n, len(replies)) - 1]
    return respond


GOOD = Reply(body=completion(verdict_json(REPORT_KEYS, (6, 7, 8))))


def test_known_replies_give_known_scores() -> None:
    with FakeJudgeServer() as srv:
        s = settings_for(srv)
        docs = [report_doc(i) for i in range(3)]
        resps = [["SCORES=10,10,10 normal"], "SCORES=5,5,5", "SCORES=0,3,9"]
        records = judge.judge_items("ptb-test-report", docs, resps, s)
        assert [r["score"] for r in records] == pytest.approx([100.0, 50.0, 40.0])
        assert records[2]["criteria"] == {"Diagnosis": 0.0, "Waveform": 3.0, "Rhythm": 9.0}
        rec = records[0]
        assert rec["status"] == "ok" and rec["judge"]["model"] == "gpt-4o-2024-08-06"
        assert rec["judge"]["rubric_version"] == judge.RUBRIC_VERSION and rec["judge"]["host"].startswith("127.0.0.1:")
        assert rec["raw"] and rec["prompt_sha"] and rec["usage"] == {"prompt_tokens": 120, "completion_tokens": 60, "api_calls": 1}
        request = srv.requests[0]
        assert request["model"] == "gpt-4o-2024-08-06" and request["temperature"] == 0
        assert request["response_format"] == {"type": "json_object"}
        agg = judge.aggregate(records)
        assert agg["score"] == pytest.approx(190 / 3, abs=1e-3) and agg["n_judged"] == 3 and not agg["flagged"]
        assert agg["criteria"]["Diagnosis"] == pytest.approx(50.0)


def test_arena_one_call_with_both_turns() -> None:
    with FakeJudgeServer() as srv:
        rec = judge.score_item("arena", arena_doc(0), [["It is AF. SCORES=9,6,3", "Left axis."]], settings_for(srv))
        assert rec["status"] == "ok" and rec["score"] == pytest.approx(60.0)
        assert rec["criteria"] == {"Accuracy": 9.0, "Completeness": 6.0, "Instruction Adherence": 3.0}
        assert srv.count == 1
        user = srv.requests[0]["messages"][1]["content"]
        for text in ("What rhythm is this?", "And the axis?", "Atrial fibrillation.", "Left axis deviation.",
                     "It is AF.", "Left axis."):
            assert text in user
        bad = judge.score_item("arena", arena_doc(1), ["only one turn"], settings_for(srv))
        assert bad["status"] == "failed" and "2 response" in bad["error"] and srv.count == 1


def test_429_retry_after_is_honoured() -> None:
    limited = Reply(429, {"error": {"message": "slow down", "code": "rate_limit_exceeded"}}, {"Retry-After": "1"})
    with FakeJudgeServer(scripted(limited, GOOD)) as srv:
        start = time.monotonic()
        rec = judge.score_item("ptb-test-report", report_doc(0), "x", settings_for(srv))
        assert rec["status"] == "ok" and srv.count == 2 and rec["usage"]["api_calls"] == 2
        assert time.monotonic() - start >= 0.95  # waited as told, not the 10 ms backoff


def test_quota_429_is_fatal_not_retried() -> None:
    quota = Reply(429, {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}})
    with FakeJudgeServer(scripted(quota)) as srv:
        records = judge.judge_items("ptb-test-report", [report_doc(i) for i in range(5)], ["x"] * 5, settings_for(srv))
        assert srv.count == 1 and all(r["status"] == "failed" for r in records)


def test_5xx_backoff_then_success_and_bounded_failure() -> None:
    err = Reply(500, {"error": {"message": "boom"}})
    with FakeJudgeServer(scripted(err, Reply(502, "bad gateway"), GOOD)) as srv:
        rec = judge.score_item("ptb-test-report", report_doc(0), "x", settings_for(srv))
        assert rec["status"] == "ok" and srv.count == 3 and rec["score"] == pytest.approx(70.0)
    with FakeJudgeServer(scripted(err)) as srv:
        rec = judge.score_item("ptb-test-report", report_doc(0), "x", settings_for(srv, max_attempts=4))
        assert rec["status"] == "failed" and rec["score"] is None and srv.count == 4
        assert "HTTP 500" in rec["error"] and "4 attempt" in rec["error"]


def test_slow_reply_times_out_and_is_retried() -> None:
    slow = Reply(body=completion(verdict_json(REPORT_KEYS, (1, 1, 1))), delay_s=1.5)
    with FakeJudgeServer(scripted(slow, GOOD)) as srv:
        rec = judge.score_item("ptb-test-report", report_doc(0), "x", settings_for(srv, timeout_s=0.3))
        assert rec["status"] == "ok" and rec["score"] == pytest.approx(70.0) and srv.count == 2
    with FakeJudgeServer(scripted(slow)) as srv:
        rec = judge.score_item("ptb-test-report", report_doc(0), "x", settings_for(srv, timeout_s=0.3, max_attempts=2))
        assert rec["status"] == "failed" and "Timeout" in rec["error"] and srv.count == 2


@pytest.mark.parametrize("bad_content,reason", [
    ("I think it is a good report.", "not a JSON object"),
    ('{"Diagnosis": 12, "Waveform": 5, "Rhythm": 5}', "outside 0-10"),
    ('{"Diagnosis": 8, "Rhythm": 5}', "missing score"),
])
def test_invalid_replies_retried_then_failed(bad_content: str, reason: str) -> None:
    bad = Reply(body=completion(bad_content))
    with FakeJudgeServer(scripted(bad, GOOD)) as srv:
        rec = judge.score_item("ptb-test-report", report_doc(0), "x", settings_for(srv))
        assert rec["status"] == "ok" and rec["usage"]["api_calls"] == 2 and rec["usage"]["prompt_tokens"] == 240
    with FakeJudgeServer(scripted(bad)) as srv:
        rec = judge.score_item("ptb-test-report", report_doc(0), "x", settings_for(srv, invalid_retries=2))
        assert rec["status"] == "failed" and rec["score"] is None and srv.count == 3
        assert reason in rec["error"] and rec["raw"] == bad_content


def test_wrong_key_stops_at_first_call(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # SDK, httpx and our own loggers, at their most verbose
    with FakeJudgeServer(api_key="sk-the-right-key-000000") as srv:
        wrong = "sk-wrong-key-1234567890abcdef"
        s = settings_for(srv, api_key=wrong, concurrency=8, cache_path=tmp_path / "c.sqlite")
        records = judge.judge_items("ptb-test-report", [report_doc(i) for i in range(40)], ["x"] * 40, s)
        assert srv.count == 1
        assert all(r["status"] == "failed" and r["score"] is None for r in records)
        assert "401" in records[0]["error"] or any("401" in r["error"] for r in records)
        assert all("401" in r["error"] for r in records)
        dumped = json.dumps(records) + json.dumps(judge.aggregate(records))
        assert wrong not in dumped and "REDACTED" in dumped  # the server echoed the key; we scrubbed it
        assert "401" in caplog.text and wrong not in caplog.text  # the failure is logged, the key is not
        # lmms-eval-style: later single calls fail at once too
        assert judge.score_item("ptb-test-report", report_doc(99), "x", s)["status"] == "failed" and srv.count == 1


def test_failure_accounting_mixed_batch() -> None:
    def respond(request: dict[str, Any], n: int) -> Reply:
        if "FAIL500" in request["messages"][1]["content"]:
            return Reply(500, {"error": {"message": "boom"}})
        if "GARBAGE" in request["messages"][1]["content"]:
            return Reply(body=completion("nope"))
        return marker_responder(request, n)

    with FakeJudgeServer(respond) as srv:
        resps = ["SCORES=10,10,10", "SCORES=4,4,4", "FAIL500", "GARBAGE", "[LMMS_EVAL_REQUEST_FAILED timeout]"]
        records = judge.judge_items("ptb-test-report", [report_doc(i) for i in range(5)], resps, settings_for(srv))
        assert [r["status"] for r in records] == ["ok", "ok", "failed", "failed", "failed"]
        assert "generation failed" in records[4]["error"]
        agg = judge.aggregate(records)
        assert (agg["n"], agg["n_judged"], agg["n_failed"]) == (5, 2, 3)
        assert agg["score"] == pytest.approx(70.0) and agg["flagged"]  # failures excluded, never 0
        assert srv.count == 2 + 3 + 3  # 500 x max_attempts, garbage x (1 + invalid_retries), no call for the failed generation


def test_cache_second_run_makes_zero_calls(tmp_path: Path) -> None:
    cache = tmp_path / "judge.sqlite"
    docs = [report_doc(i) for i in range(10)]
    resps = [f"report {i} SCORES={i % 11},5,5" for i in range(10)]
    with FakeJudgeServer() as srv:
        first = judge.judge_items("ptb-test-report", docs, resps, settings_for(srv, cache_path=cache))
        assert srv.count == 10
        judge.reset_runtimes()  # a new run
        second = judge.judge_items("ptb-test-report", docs, resps, settings_for(srv, cache_path=cache))
        assert srv.count == 10 and all(r["cached"] for r in second)
        assert [r["score"] for r in first] == [r["score"] for r in second]
        assert judge.aggregate(second)["usage"]["api_calls"] == 0
        rubric = tmp_path / "my_rubric.txt"
        rubric.write_text("Grade Diagnosis, Waveform and Rhythm 0-10. Reply in JSON.")
        custom = judge.judge_items("ptb-test-report", docs[:2], resps[:2],
                                   settings_for(srv, cache_path=cache, prompt_file=rubric))
        assert srv.count == 12 and custom[0]["judge"]["rubric_version"] == "custom:my_rubric.txt"
        assert srv.requests[-1]["messages"][0]["content"].startswith("Grade Diagnosis")
        judge.score_item("ptb-test-report", docs[0], resps[0], settings_for(srv, cache_path=cache, model="gpt-4o-mini"))
        assert srv.count == 13  # another judge model misses
        est = judge.estimate("ptb-test-report", docs, resps, settings_for(srv, cache_path=cache))
        assert est["cached"] == 10 and est["calls"] == 0 and srv.count == 13


def test_calls_in_flight_never_exceed_limit() -> None:
    with FakeJudgeServer(latency_s=0.05) as srv:
        s = settings_for(srv, concurrency=3)
        docs = [report_doc(i) for i in range(30)]
        # lmms-eval's process_results pool (16 threads here) calls score_item directly
        with ThreadPoolExecutor(16) as pool:
            records = list(pool.map(lambda i: judge.score_item("ptb-test-report", docs[i], "x", s), range(30)))
        assert all(r["status"] == "ok" for r in records)
        assert srv.count == 30 and srv.max_in_flight == 3
        judge.judge_items("ptb-test-report", [report_doc(i) for i in range(30, 50)], ["y"] * 20, s)
        assert srv.max_in_flight == 3


def test_budget_cap_skips_never_zero() -> None:
    with FakeJudgeServer() as srv:
        s = settings_for(srv, max_calls=3, concurrency=1)
        records = judge.judge_items("ptb-test-report", [report_doc(i) for i in range(5)], ["SCORES=2,2,2"] * 5, s)
        assert [r["status"] for r in records].count("skipped") == 2 and srv.count == 3
        agg = judge.aggregate(records)
        assert agg["n_skipped"] == 2 and agg["n_judged"] == 3 and agg["score"] == pytest.approx(20.0) and agg["flagged"]


def test_azure_provider_path_and_header(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeJudgeServer() as srv:
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", srv.root)
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", srv.api_key)
        monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
        monkeypatch.setenv("ECGBENCH_JUDGE_MODEL", "ecg-judge-deployment")
        s = dataclasses.replace(judge.settings_from_env(), backoff_base_s=0.01)
        judge.check_configured(s)
        rec = judge.score_item("ptb-test-report", report_doc(0), "SCORES=3,3,3", s)
        assert rec["status"] == "ok" and rec["score"] == pytest.approx(30.0) and rec["judge"]["provider"] == "azure"
        assert srv.paths[0].startswith("/openai/deployments/ecg-judge-deployment/chat/completions")
        assert "api-version=2024-10-21" in srv.paths[0]


def test_cache_write_failure_does_not_fail_the_run(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with FakeJudgeServer() as srv:
        rec = judge.score_item("ptb-test-report", report_doc(0), "SCORES=9,9,9",
                               settings_for(srv, cache_path=blocker / "judge.sqlite"))
        assert rec["status"] == "ok" and rec["score"] == pytest.approx(90.0)


def test_score_item_is_thread_safe_with_shared_cache(tmp_path: Path) -> None:
    cache = tmp_path / "judge.sqlite"
    with FakeJudgeServer() as srv:
        s = settings_for(srv, cache_path=cache, concurrency=4)
        docs = [report_doc(i % 5) for i in range(40)]  # 5 distinct items asked 8 times each, concurrently
        results: list[dict[str, Any]] = []
        lock = threading.Lock()

        def worker(i: int) -> None:
            rec = judge.score_item("ptb-test-report", docs[i], f"cand {i % 5} SCORES=5,5,5", s)
            with lock:
                results.append(rec)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 40 and all(r["status"] == "ok" and r["score"] == pytest.approx(50.0) for r in results)
        assert srv.count <= 40


def test_judge_that_dies_mid_run_stops_judging_fast() -> None:
    """The server answers two items, then goes away: after the first item that found no server and the
    next one, the breaker trips and the rest fail at once (no retries per item), never 0."""
    with FakeJudgeServer(max_requests=2) as srv:
        settings = settings_for(srv, concurrency=1)
        docs = [report_doc(i) for i in range(6)]
        records = judge.judge_items("ptb-test-report", docs, [f"report {i}" for i in range(6)], settings)
        sent = srv.count
    assert [r["status"] for r in records[:2]] == ["ok", "ok"]
    assert all(r["status"] == "failed" and r["score"] is None for r in records[2:])
    gone = next(i for i, r in enumerate(records) if "unreachable" in (r["error"] or ""))  # the first item that found no server
    assert gone < len(records) - 1 and all("judging stopped" in r["error"] for r in records[gone + 1:])
    assert sent <= 2 + 3  # the answers, then at most one item's attempts on the dying server; none later


def test_judge_that_hangs_mid_run_stops_after_two_items() -> None:
    """The server answers two items, then accepts requests and never replies in time: once calls of
    two items got no reply (one of them out of attempts) with no reply to anything started since,
    the breaker trips and the rest of the batch fails at once (no hours of timeouts)."""
    hung_after = 2

    def respond(request: dict[str, Any], n: int) -> Reply:
        return Reply(body=completion(verdict_json(REPORT_KEYS, (5, 5, 5))), delay_s=0.0 if n <= hung_after else 1.0)

    with FakeJudgeServer(respond) as srv:
        settings = settings_for(srv, concurrency=1, timeout_s=0.2, max_attempts=2)
        records = judge.judge_items("ptb-test-report", [report_doc(i) for i in range(8)],
                                    [f"report {i}" for i in range(8)], settings)
        sent = srv.count
    assert [r["status"] for r in records] == ["ok"] * hung_after + ["failed"] * (8 - hung_after)
    assert "timed out" in records[hung_after]["error"]
    assert all(r["error"].startswith("judging stopped: no reply from the judge") for r in records[hung_after + 1:])
    assert sent == hung_after + 2 + 1  # the first hung item's two attempts, the next item's first; none later


def test_an_item_that_always_times_out_is_its_own_failure() -> None:
    """Concurrency 1: an item whose attempts all time out, then an item that gets a reply, twice:
    evidence from one item is not an outage, and a reply clears it; nothing is stopped."""
    slow, good = Reply(body=completion("{}"), delay_s=1.0), Reply(body=completion(verdict_json(REPORT_KEYS, (5, 5, 5))))
    with FakeJudgeServer(scripted(slow, slow, good, slow, slow, good)) as srv:
        settings = settings_for(srv, concurrency=1, timeout_s=0.2, max_attempts=2)
        records = judge.judge_items("ptb-test-report", [report_doc(i) for i in range(4)],
                                    [f"report {i}" for i in range(4)], settings)
    assert [r["status"] for r in records] == ["failed", "ok", "failed", "ok"]
    assert "judging stopped" not in json.dumps(records)


def _third_failing(request: dict[str, Any], n: int) -> Reply:
    """HTTP 500 for good on every prompt whose candidate text names an item number divisible by 3."""
    item = int(re.search(r"candidate (\d+)", request["messages"][1]["content"]).group(1))
    if item % 3 == 0:
        return Reply(500, {"error": {"message": "fake judge: this prompt crashes me"}}, delay_s=0.05)
    return marker_responder(request, n)


@pytest.mark.parametrize("concurrency", [1, 16])
def test_http_errors_for_some_prompts_are_their_items_failures(concurrency: int) -> None:
    """A third of the prompts get HTTP 500 every time (and finish last): exactly those items fail,
    at any concurrency; the server answering is no outage, so nothing is stopped."""
    n = 12
    with FakeJudgeServer(_third_failing) as srv:
        settings = settings_for(srv, concurrency=concurrency, max_attempts=3)
        records = judge.judge_items("ptb-test-report", [report_doc(i) for i in range(n)],
                                    [f"candidate {i}" for i in range(n)], settings)
        assert srv.statuses.count(500) == 3 * (n // 3)  # every attempt of the failing items, none stopped
    assert [r["status"] for r in records] == ["failed" if i % 3 == 0 else "ok" for i in range(n)]
    assert all("HTTP 500" in r["error"] for r in records if r["status"] == "failed")


def test_every_batch_gets_its_own_chance_after_a_trip() -> None:
    """Half-open: a batch that tripped the breaker does not fail the next batch unprobed: its first
    item probes with one call; a reply closes the breaker, no reply fails that batch at once."""
    down = {"now": True}

    def respond(request: dict[str, Any], n: int) -> Reply:
        return Reply(body=completion("{}"), delay_s=1.0) if down["now"] else marker_responder(request, n)

    with FakeJudgeServer(respond) as srv:
        settings = settings_for(srv, concurrency=4, timeout_s=0.2, max_attempts=2)
        docs, resps = [report_doc(i) for i in range(6)], [f"report {i}" for i in range(6)]
        first = judge.judge_items("ptb-test-report", docs, resps, settings)
        assert all(r["status"] == "failed" for r in first)
        assert any(r["error"].startswith("judging stopped: no reply") for r in first)
        before = srv.count
        second = judge.judge_items("ptb-test-report", docs, resps, settings)  # still hung: one probe call
        assert srv.count == before + 1 and all(r["status"] == "failed" for r in second)
        assert sum("probe call got no reply" in r["error"] for r in second) == len(docs) - 1
        down["now"] = False
        third = judge.judge_items("ptb-test-report", docs, resps, settings)  # back: probe, then everything
        assert all(r["status"] == "ok" for r in third)
        # lmms-eval's way: score_item per item, the task (subset) as the scope
        assert judge.score_item("arena", arena_doc(0), ["a", "b"], settings)["status"] == "ok"
