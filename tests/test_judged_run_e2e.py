"""A judged lmms-eval run never loses its answers: the real `lmms-eval` CLI, `--model pulse` on a
tiny original-format checkpoint, `ecgbench_ptb_report,ecgbench_arena`, against the loopback judge.

Five judge situations (healthy, failing for good on a fixed subset of items, unreachable, judging
deferred with ECGBENCH_SKIP_JUDGE_CHECK=1, a judge call budget ECGBENCH_JUDGE_MAX_CALLS reached mid-run):
each run writes its results and samples files, the
counts in the results JSON equal what the judge server saw, then `ecgbench judge` against a healthy
server completes what was left and `ecgbench report` shows complete judge numbers. The user's
OpenAI key never reaches the separate judge host (the server records every credential header).
Also: `--use_cache` resumes a run killed part-way, generating only the rest; and the judge's circuit
breaker tells a dead judge (down or hung mid-run) from prompts it cannot judge (HTTP 500 for a third
of the items), at judge concurrency 1 and 16.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pulse_app.cli import main as ecgbench
from pulse_tasks.scoring import judge
from pulse_tasks.scoring.judge.attached import canonical_response

try:
    from judge_server import (
        FakeJudgeServer,
        failing_on,
        hanging_after,
        marker_responder,
    )
except ImportError:  # tests/ imported as a package
    from tests.judge_server import (
        FakeJudgeServer,
        failing_on,
        hanging_after,
        marker_responder,
    )

pytestmark = pytest.mark.slow

TASKS = "ecgbench_ptb_report,ecgbench_arena"
JUDGE_KEY = "sk-judge-host-key-1111111111"  # the judge server's own key (ECGBENCH_JUDGE_API_KEY)
USER_KEY = "sk-users-openai-key-9999999999"  # the user's OpenAI key: must never reach the judge host
# Items the failing judge refuses for good: text only their gold answer holds (tests/conftest synthetic data).
FAILING_NEEDLES = {"ptb-test-report": "about 134 bpm", "arena": "about 46 bpm"}
N_PER_SUBSET = 4  # conftest.SYNTH_PER_SUBSET
# Short generations: the tiny random model would otherwise babble up to the task's 1024 tokens.
GEN_KWARGS = "max_new_tokens=12"
CLI_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pulse_models.testing import make_tiny_original_checkpoint

    return make_tiny_original_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-pulse")


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there once the socket is closed


def _env(base_url: str, tmp_path: Path, data: Path, **extra: str) -> dict[str, str]:
    from pulse_tasks.scoring.judge.settings import ENV_VARS

    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update({"OPENAI_API_KEY": USER_KEY, "ECGBENCH_JUDGE_BASE_URL": base_url, "ECGBENCH_JUDGE_API_KEY": JUDGE_KEY,
                "ECGBENCH_JUDGE_CACHE": str(tmp_path / "judge.sqlite"), "ECGBENCH_JUDGE_MAX_ATTEMPTS": "2",
                "ECGBENCH_DATA": str(data), "ECGBENCH_CACHE": str(tmp_path / "ecgbench_cache"),
                "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    env.update(extra)
    return env


def _lmms_eval_args(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmms_eval", "--model", "pulse",
            "--model_args", f"pretrained={ckpt},dtype=float32,device=cpu", "--tasks", TASKS,
            "--gen_kwargs", GEN_KWARGS, "--batch_size", "1", "--output_path", str(out), "--log_samples", *extra]


def _run_lmms_eval(ckpt: Path, out: Path, env: dict[str, str], cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_lmms_eval_args(ckpt, out, *extra), env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, check=False)


def _outputs(out: Path) -> tuple[Path, dict, dict[str, Path]]:
    results = sorted(glob.glob(str(out / "**" / "*_results.json"), recursive=True))
    assert results, f"lmms-eval wrote no results file under {out}"
    path = Path(results[-1])
    samples = {Path(p).stem.split("_samples_", 1)[1]: Path(p) for p in glob.glob(str(path.parent / "*_samples_*.jsonl"))}
    return path, json.loads(path.read_text()), samples


def _records(samples_file: Path) -> list[dict]:
    lines = [json.loads(line) for line in samples_file.read_text().splitlines() if line.strip()]
    return [line["judge_score"] for line in lines]


def _judged_by_server(srv: FakeJudgeServer, subset: str) -> tuple[int, int]:
    """(items the server scored, items it only refused) among the requests with one subset's rubric."""
    seen_ok, seen_failed = set(), set()
    for request, status in zip(srv.requests, srv.statuses):
        system = " ".join(m.get("content", "") for m in request["messages"] if m["role"] == "system")
        if ("Accuracy" in system) != (subset == "arena"):  # the arena rubric grades Accuracy
            continue
        (seen_ok if status == 200 else seen_failed).add(request["messages"][-1]["content"])  # one text per item
    return len(seen_ok), len(seen_failed - seen_ok)


CASES = ("healthy", "failing", "unreachable", "deferred", "capped")
# The capped run's judge budget (ECGBENCH_JUDGE_MAX_CALLS): process-wide, so shared by both tasks.
MAX_CALLS = 3


@pytest.fixture(scope="module")
def judged_runs(tiny_ckpt, synth_data_dir, tmp_path_factory):
    """The five lmms-eval runs, started at once (they share nothing; wall time is one run's on a
    machine with cores to spare): case -> (completed process, output folder, its judge server, tmp dir)."""
    with FakeJudgeServer(marker_responder, api_key=JUDGE_KEY, lifetime_s=1800) as healthy, \
            FakeJudgeServer(failing_on(list(FAILING_NEEDLES.values())), api_key=JUDGE_KEY, lifetime_s=1800) as failing, \
            FakeJudgeServer(marker_responder, api_key=JUDGE_KEY, lifetime_s=1800) as unused, \
            FakeJudgeServer(marker_responder, api_key=JUDGE_KEY, lifetime_s=1800) as capped:
        servers = {"healthy": healthy, "failing": failing, "unreachable": None, "deferred": unused, "capped": capped}
        started = {}
        for case in CASES:
            tmp = tmp_path_factory.mktemp(f"judged-{case}")
            srv = servers[case]
            base_url = srv.url if srv is not None else _closed_port_url()
            extra = {"deferred": {"ECGBENCH_SKIP_JUDGE_CHECK": "1"},
                     "capped": {"ECGBENCH_JUDGE_MAX_CALLS": str(MAX_CALLS)}}.get(case, {})
            out = tmp / "results"
            proc = subprocess.Popen(_lmms_eval_args(tiny_ckpt, out), env=_env(base_url, tmp, synth_data_dir, **extra),
                                    cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            started[case] = (proc, out, srv, tmp)
        done = {}
        for case, (proc, out, srv, tmp) in started.items():
            stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
            done[case] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out, srv, tmp)
        yield done


@pytest.mark.parametrize("case", CASES)
def test_judged_run_keeps_answers_and_judge_later_completes_it(case, judged_runs, synth_data_dir, monkeypatch, capsys):
    proc, out, server, tmp_path = judged_runs[case]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    _, data, samples = _outputs(out)
    assert set(samples) == {"ecgbench_ptb_report", "ecgbench_arena"}, sorted(samples)

    # the user's key never reached the judge host; the judge's own key did
    auth = server.auth if server is not None else []
    assert all(a == f"Bearer {JUDGE_KEY}" for a in auth)
    assert bool(auth) == (case in ("healthy", "failing", "capped"))
    assert USER_KEY not in proc.stderr + proc.stdout

    unjudged: dict[str, int] = {}
    for task, subset in (("ecgbench_ptb_report", "ptb-test-report"), ("ecgbench_arena", "arena")):
        row = data["results"][task]
        records = _records(samples[task])
        assert len(records) == N_PER_SUBSET and all(r["status"] in judge.STATUSES for r in records)
        assert all(("score" in r) == (r["status"] == "ok") for r in records), "score only on judged items"
        served_ok, served_failed = _judged_by_server(server, subset) if server is not None else (0, 0)
        assert row["judge_items,none"] == N_PER_SUBSET
        n_ok = N_PER_SUBSET - row["judge_failed,none"] - row["judge_skipped,none"]
        assert (n_ok, row["judge_failed,none"] if case in ("healthy", "failing", "capped") else 0) == (served_ok, served_failed)
        if case == "healthy":
            assert row["judge_failed,none"] == 0 and row["judge_skipped,none"] == 0
            assert isinstance(row["judge_score,none"], float) and row["judge_score,none"] == pytest.approx(100.0)
        elif case == "failing":
            assert row["judge_failed,none"] == 1 and row["judge_skipped,none"] == 0
            assert [r["status"] for r in records].count("failed") == 1
        elif case == "unreachable":
            assert row["judge_failed,none"] == N_PER_SUBSET and served_ok == 0
            assert all(r["status"] == "failed" for r in records)
        elif case == "deferred":
            assert row["judge_skipped,none"] == N_PER_SUBSET and row["judge_failed,none"] == 0
            assert all(r["status"] == "deferred" for r in records)
        else:  # capped: the items past the budget are skipped, with the reason, never a 0
            assert row["judge_failed,none"] == 0 and row["judge_skipped,none"] == N_PER_SUBSET - n_ok
            skipped = [r for r in records if r["status"] == "skipped"]
            assert len(skipped) == N_PER_SUBSET - n_ok and all(f"budget of {MAX_CALLS}" in r["error"] for r in skipped)
        unjudged[subset] = N_PER_SUBSET - n_ok
    if case == "capped":
        assert sum(unjudged.values()) == 2 * N_PER_SUBSET - MAX_CALLS and len(server.requests) == MAX_CALLS
    if case == "unreachable":
        assert "unreachable" in proc.stderr

    # judge later against a healthy server: only what was left is judged, then the report is complete
    from pulse_tasks.scoring.judge.settings import ENV_VARS

    judge.reset_runtimes()
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", USER_KEY)
    monkeypatch.setenv("ECGBENCH_JUDGE_API_KEY", JUDGE_KEY)
    with FakeJudgeServer(marker_responder, api_key=JUDGE_KEY) as later:
        for task, subset in (("ecgbench_ptb_report", "ptb-test-report"), ("ecgbench_arena", "arena")):
            code = ecgbench(["judge", "--subset", subset, "--data", str(synth_data_dir), "--predictions",
                             str(samples[task]), "--judge-base-url", later.url, "--cache", str(tmp_path / "judge.sqlite"),
                             "--no-progress"])
            printed = json.loads(capsys.readouterr().out)
            assert code == 0 and printed["n_judged"] == N_PER_SUBSET and printed["n_failed"] == 0, printed
        assert len(later.requests) == sum(unjudged.values()), "items judged during the run were judged again"
        assert all(a == f"Bearer {JUDGE_KEY}" for a in later.auth)
    judge.reset_runtimes()
    assert ecgbench(["report", str(out), "--format", "json", "--resamples", "0", "--no-published"]) == 0
    report = json.loads(capsys.readouterr().out)
    (run,) = report["runs"]
    for subset in ("ptb-test-report", "arena"):
        sub = run["subsets"][subset]
        assert sub["counts"] == {"judge_ok": N_PER_SUBSET, "judge_failed": 0, "judge_skipped": 0}, sub["counts"]
        assert sub["modes"]["paper"]["score"]["value"] == pytest.approx(100.0)
        assert sub["judge_added"]["n"] == unjudged[subset]
    if case != "healthy":
        assert ecgbench(["report", str(out), "--resamples", "0", "--no-published"]) == 0
        assert "judge records added afterwards" in capsys.readouterr().out


# ---------------------------------------------------------------- resume a killed run


def _kill_when(proc: subprocess.Popen, marker: bytes, timeout_s: float) -> bytes:
    """Read the process's stderr as it comes; kill its process group once ``marker`` shows up."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    fd = proc.stderr.fileno()
    while time.monotonic() < deadline:
        chunk = os.read(fd, 65536)
        if not chunk:
            break  # the process ended before the marker
        seen += chunk
        if marker in seen:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    return seen


def test_use_cache_resumes_a_killed_run(tiny_ckpt, synth_data_dir, tmp_path):
    """Kill a `--use_cache` run once the report items are generated, while the arena generates;
    the rerun serves the report answers from lmms-eval's cache and generates only the arena."""
    cache = tmp_path / "lmms_cache"
    env = _env("http://127.0.0.1:9/v1", tmp_path, synth_data_dir, ECGBENCH_SKIP_JUDGE_CHECK="1",
               LMMS_CACHE_RUN_ID="resume-test")  # a fixed run id: the rerun reopens the killed run's cache shard
    out = tmp_path / "results"
    args = _lmms_eval_args(tiny_ckpt, out, "--use_cache", str(cache))
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    first = _kill_when(proc, b"pulse generating (multi-round)", CLI_TIMEOUT_S).decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the arena started:\n{first[-3000:]}"
    assert not glob.glob(str(out / "**" / "*_results.json"), recursive=True)
    audit = [json.loads(line) for line in (cache / "runs" / "resume-test" / "rank_0.audit.jsonl").read_text().splitlines()]
    done = {(a["task_name"], a["doc_id"]): json.loads(a["response"]) for a in audit}
    assert {t for t, _ in done} == {"ecgbench_ptb_report"} and len(done) == N_PER_SUBSET, sorted(done)

    rerun = _run_lmms_eval(tiny_ckpt, out, env, tmp_path, "--use_cache", str(cache))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = rerun.stderr + rerun.stdout
    assert f"ResponseCache: all {N_PER_SUBSET} requests served from cache" in log, log[-3000:]
    generated = [line for line in log.splitlines() if line.startswith("pulse: ") and " requests in " in line]
    assert len(generated) == 1 and generated[0].startswith(f"pulse: {N_PER_SUBSET} requests"), generated  # the arena only
    _, data, samples = _outputs(out)
    assert data["results"]["ecgbench_arena"]["judge_items,none"] == N_PER_SUBSET
    lines = [json.loads(line) for line in samples["ecgbench_ptb_report"].read_text().splitlines() if line.strip()]
    assert len(lines) == N_PER_SUBSET
    for line in lines:  # the report answers are the killed run's, served from the cache
        answer = canonical_response(line.get("filtered_resps", line.get("resps")))
        assert answer == done[("ecgbench_ptb_report", line["doc_id"])]


# ---------------------------------------------------------------- failed generations are visible


def test_mostly_failed_generations_error_banner_and_refused_submission(tiny_ckpt, synth_data_dir, tmp_path, capsys):
    """Every generation fails (max_new_tokens=0 is refused by generate, as a CUDA error would be): paper
    mode still gives chance credit, so the run logs an ERROR, the report shows a banner and submit refuses.
    The gold-history arena (judged per conversation in its aggregation) logs the same ERROR."""
    env = _env("http://127.0.0.1:9/v1", tmp_path, synth_data_dir, ECGBENCH_SKIP_JUDGE_CHECK="1")
    out = tmp_path / "results"
    args = [sys.executable, "-m", "lmms_eval", "--model", "pulse",
            "--model_args", f"pretrained={tiny_ckpt},dtype=float32,device=cpu", "--tasks", "ecgbench_csn,ecgbench_arena_gold_history",
            "--gen_kwargs", "max_new_tokens=0", "--output_path", str(out), "--log_samples"]
    proc = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, data, _ = _outputs(out)
    errors = [line for line in proc.stderr.splitlines() if "generations failed or were empty" in line]
    assert len(errors) == 2, proc.stderr[-3000:]
    csn, gold = sorted(errors, key=lambda line: "ecgbench_arena_gold_history" in line)
    assert f"csn-test-no-cot: {N_PER_SUBSET} of {N_PER_SUBSET} generations failed" in csn
    assert "csn-test-no-cot-0000" in csn  # the first failed ids
    # one item per conversation (both turns failed); named by conversation id and by its own task
    assert f"arena: {N_PER_SUBSET} of {N_PER_SUBSET} generations failed" in gold and "(ecgbench_arena_gold_history)" in gold
    gold_row = data["results"]["ecgbench_arena_gold_history"]
    assert gold_row["judge_skipped,none"] == N_PER_SUBSET and gold_row["judge_failed,none"] == 0  # deferred, not failed
    assert data["results"]["ecgbench_csn"]["accuracy_paper,none"] > 0  # chance credit: plausible-looking numbers

    assert ecgbench(["report", str(out), "--resamples", "0", "--no-published"]) == 0
    report = capsys.readouterr().out
    assert "GENERATION FAILURES" in report and f"{N_PER_SUBSET} of {N_PER_SUBSET} generations failed" in report
    sub = tmp_path / "submission.json"
    assert ecgbench(["submit", str(out), "--out", str(sub), "--resamples", "0"]) != 0
    assert "refusing to submit" in capsys.readouterr().err and not sub.exists()
    assert ecgbench(["submit", str(out), "--out", str(sub), "--resamples", "0", "--allow-failures"]) == 0
    assert sub.exists() and "warning" in capsys.readouterr().err


# ---------------------------------------------------------------- the judge's circuit breaker

N_BREAKER = 9  # items per subset in the breaker runs; the last third of each is failed for good
UP_FOR = 3  # requests the dying and the hanging judge answer before they go away
BREAKER_TIMEOUT_S = 1.0  # ECGBENCH_JUDGE_TIMEOUT of the dying and hanging runs (the breaker's window)
TASK_SUBSETS = (("ecgbench_ptb_report", "ptb-test-report"), ("ecgbench_arena", "arena"))
# run -> (lmms-eval's --process_docs_parallel = ECGBENCH_JUDGE_CONCURRENCY, other judge variables)
BREAKER_CASES = {"third-1": (1, {}), "third-16": (16, {}),
                 "down": (4, {"ECGBENCH_JUDGE_TIMEOUT": str(BREAKER_TIMEOUT_S), "ECGBENCH_JUDGE_MAX_ATTEMPTS": "6"}),
                 "hung": (16, {"ECGBENCH_JUDGE_TIMEOUT": str(BREAKER_TIMEOUT_S), "ECGBENCH_JUDGE_MAX_ATTEMPTS": "6"})}


@pytest.fixture(scope="module")
def breaker_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pulse_tasks.data.synth import make_ecgbench

    return make_ecgbench(tmp_path_factory.mktemp("ecgbench-breaker"), per_subset=N_BREAKER, layout="hub", seed=0,
                         image_size=(320, 240))


def _gold(data: Path, subset: str) -> dict[str, str]:
    """Item id -> its (first) gold answer, in dataset order."""
    from pulse_tasks.data.sources import load_subset

    ds = load_subset(subset, data, check_images=False).remove_columns("image")
    return {row["id"]: row["answers"][0] for row in ds}


def _needle(gold: str) -> str:
    return f"\n{gold.strip()}\n[End of"  # the gold answer's whole block line in the judge prompt


def _failing_ids(data: Path) -> dict[str, set[str]]:
    """Subset -> the items the failing judge refuses: the last third in dataset order (they finish
    last, as in the issue) and any other item with the same gold text."""
    out = {}
    for _, subset in TASK_SUBSETS:
        gold = _gold(data, subset)
        needles = {_needle(g) for g in list(gold.values())[-N_BREAKER // 3:]}
        out[subset] = {i for i, g in gold.items() if _needle(g) in needles}
        assert 0 < len(out[subset]) < N_BREAKER
    return out


@pytest.fixture(scope="module")
def breaker_runs(tiny_ckpt, breaker_data, tmp_path_factory):
    """The four lmms-eval runs, started at once: case -> (completed process, output folder, judge server)."""
    gold = {subset: _gold(breaker_data, subset) for _, subset in TASK_SUBSETS}
    failing_ids = _failing_ids(breaker_data)
    needles = [_needle(gold[s][i]) for s, ids in failing_ids.items() for i in ids]
    responders = {"third-1": failing_on(needles, delay_s=0.2), "third-16": failing_on(needles, delay_s=0.2),
                  "down": marker_responder, "hung": hanging_after(UP_FOR)}
    servers = {case: FakeJudgeServer(responders[case], api_key=JUDGE_KEY, lifetime_s=1800,
                                     max_requests=UP_FOR if case == "down" else 5000).start() for case in BREAKER_CASES}
    try:
        started = {}
        for case, (parallel, extra) in BREAKER_CASES.items():
            tmp = tmp_path_factory.mktemp(f"breaker-{case}")
            env = _env(servers[case].url, tmp, breaker_data, ECGBENCH_JUDGE_CONCURRENCY=str(parallel), **extra)
            out = tmp / "results"
            args = _lmms_eval_args(tiny_ckpt, out, "--process_docs_parallel", str(parallel))
            started[case] = (subprocess.Popen(args, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True), out, tmp)
        done = {}
        for case, (proc, out, tmp) in started.items():
            stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
            done[case] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out,
                          servers[case], tmp)
        yield done
    finally:
        for srv in servers.values():
            srv.stop()


def _states(out: Path) -> tuple[dict, dict[str, dict[str, dict]]]:
    """(the results JSON's rows, task -> item id -> judge record) of a finished run."""
    _, data, samples = _outputs(out)
    assert set(samples) == {task for task, _ in TASK_SUBSETS}, sorted(samples)
    return data["results"], {task: {r["id"]: r for r in _records(samples[task])} for task, _ in TASK_SUBSETS}


def _subset_requests(srv: FakeJudgeServer, subset: str) -> list[tuple[int, float]]:
    """(status, arrival time) of the requests carrying one subset's rubric."""
    out = []
    for request, status, at in zip(srv.requests, srv.statuses, srv.times):
        system = " ".join(m.get("content", "") for m in request["messages"] if m["role"] == "system")
        if ("Accuracy" in system) == (subset == "arena"):  # the arena rubric grades Accuracy
            out.append((status, at))
    return out


def _run_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("case", ["third-1", "third-16"])
def test_prompts_the_judge_cannot_judge_fail_alone(case, breaker_runs, breaker_data):
    """(a) HTTP 500 for good on a third of the prompts (slow, so they finish last): exactly those items
    are failed, everything else is judged, in both tasks; judge_failed is what the server failed."""
    proc, out, srv, _ = breaker_runs[case]
    _run_ok(proc)
    rows, records = _states(out)
    failing = _failing_ids(breaker_data)
    for task, subset in TASK_SUBSETS:
        states = {i: r["status"] for i, r in records[task].items()}
        assert states == {i: "failed" if i in failing[subset] else "ok" for i in _gold(breaker_data, subset)}
        assert all("HTTP 500" in r["error"] for r in records[task].values() if r["status"] == "failed")
        served_ok, served_failed = _judged_by_server(srv, subset)
        assert rows[task]["judge_failed,none"] == served_failed == len(failing[subset])
        assert served_ok == N_BREAKER - len(failing[subset]) and rows[task]["judge_skipped,none"] == 0
        assert rows[task]["judge_score,none"] == pytest.approx(100.0)
    assert "judging stopped" not in proc.stderr and "judge stopped" not in proc.stderr


def test_judge_concurrency_does_not_change_the_states(breaker_runs):
    """(d) the same per-item states at judge concurrency 1 and 16."""
    runs = {case: _states(breaker_runs[case][1])[1] for case in ("third-1", "third-16")}
    one, sixteen = ({task: {i: r["status"] for i, r in recs.items()} for task, recs in runs[c].items()}
                    for c in ("third-1", "third-16"))
    assert one == sixteen


def _judge_later(samples: dict[str, Path], data: Path, tmp_path: Path, monkeypatch, capsys) -> int:
    """`ecgbench judge` on both samples files against a healthy judge; the requests it needed."""
    from pulse_tasks.scoring.judge.settings import ENV_VARS

    judge.reset_runtimes()
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ECGBENCH_JUDGE_API_KEY", JUDGE_KEY)
    with FakeJudgeServer(marker_responder, api_key=JUDGE_KEY) as later:
        for task, subset in TASK_SUBSETS:
            code = ecgbench(["judge", "--subset", subset, "--data", str(data), "--predictions", str(samples[task]),
                             "--judge-base-url", later.url, "--cache", str(tmp_path / "judge.sqlite"), "--no-progress"])
            printed = json.loads(capsys.readouterr().out)
            assert code == 0 and printed["n_judged"] == N_BREAKER and printed["n_failed"] == 0, printed
    judge.reset_runtimes()
    return len(later.requests)


@pytest.mark.parametrize("case", ["down", "hung"])
def test_judge_gone_mid_run_stops_judging_and_judge_later_finishes(case, breaker_runs, breaker_data, monkeypatch,
                                                                   capsys):
    """(b) a judge that goes down after UP_FOR replies, (c) one that then hangs: the run stops judging
    within a few timeouts (the task it went away in stops calling; the next task makes one probe call),
    keeps every answer, and `ecgbench judge` later judges exactly the rest."""
    proc, out, srv, tmp = breaker_runs[case]
    _run_ok(proc)
    rows, records = _states(out)
    n_ok = {task: sum(r["status"] == "ok" for r in recs.values()) for task, recs in records.items()}
    assert sum(n_ok.values()) == UP_FOR == srv.statuses.count(200)  # judged: exactly what the judge answered
    first, second = sorted(n_ok, key=n_ok.get, reverse=True)  # the task it went away in, the one after
    assert n_ok[second] == 0
    for task, _ in TASK_SUBSETS:
        assert rows[task]["judge_items,none"] == N_BREAKER
        assert rows[task]["judge_failed,none"] == N_BREAKER - n_ok[task]
    stopped = [r for r in records[first].values() if r["status"] == "failed" and r["error"].startswith("judging stopped")]
    assert stopped, "the breaker never tripped in the task the judge went away in"
    probe, *rest = sorted((r for r in records[second].values()), key=lambda r: r["error"].startswith("judging stopped"))
    assert ("unreachable" if case == "down" else "timed out") in probe["error"]  # the one call it made
    assert rest and all(r["error"].startswith("judging stopped: the probe call got no reply") for r in rest)
    second_subset = dict(TASK_SUBSETS)[second]
    if case == "hung":
        assert len(_subset_requests(srv, second_subset)) == 1  # the probe, nothing else
        hung = [at for status, at in _subset_requests(srv, dict(TASK_SUBSETS)[first]) if status != 200]
        # two waves of the calls in flight, not 6 attempts of each: ~3 s with 1 s timeouts, not ~20 s
        assert len(hung) <= 2 * (N_BREAKER - n_ok[first]) and max(hung) - min(hung) < 5 * BREAKER_TIMEOUT_S
    else:
        assert not _subset_requests(srv, second_subset)
    assert "judge stopped for this task or batch" in proc.stderr and "probing with one call" in proc.stderr

    assert _judge_later(_outputs(out)[2], breaker_data, tmp, monkeypatch, capsys) == 2 * N_BREAKER - UP_FOR
    assert ecgbench(["report", str(out), "--format", "json", "--resamples", "0", "--no-published"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    for _, subset in TASK_SUBSETS:
        assert run["subsets"][subset]["counts"] == {"judge_ok": N_BREAKER, "judge_failed": 0, "judge_skipped": 0}
