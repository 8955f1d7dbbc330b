"""Hub data revisions (issue 14, item 5): each task's `data_source` records the commit the hub
data was read at (`hub:PULSE-ECG/ECGBench@<sha>`), the load is pinned to it, and `ecgbench
compare` / `ecgbench validate` refuse runs on different revisions unless told otherwise.

The hub is unreachable here: revisions come from a fake Hugging Face cache (the `refs/main` file
a real download leaves) or a monkeypatched hub answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pulse_app import cli
from pulse_tasks.data import sources as data
from pulse_tasks.data.subsets import HUB_DATASET
from pulse_tasks.glue import registry
from pulse_tasks.results import runs, submission

SHA_A = "a" * 40
SHA_B = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face hub cache, our task cache beside it, the hub switched off."""
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / "ecgbench-cache"))
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    return cache


def _cache_ref(cache: Path, repo: str, sha: str, ref: str = "main") -> None:
    refs = cache / f"datasets--{repo.replace('/', '--')}" / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / ref).write_text(sha)


@pytest.mark.parametrize("revision,cached,expected", [
    (SHA_B, None, SHA_B),          # a commit as given, no lookup
    (None, SHA_A, SHA_A),          # default branch from the cache's refs/main
    ("v1.0", SHA_B, SHA_B),        # a tag from the cache's refs/v1.0
    (None, None, None),            # offline and never downloaded: unknown
    (None, "not-a-sha", None),     # a damaged ref is no commit
])
def test_resolve_hub_revision_offline(hub_cache, revision, cached, expected):
    if cached:
        _cache_ref(hub_cache, HUB_DATASET, cached, revision or "main")
    assert data.resolve_hub_revision(HUB_DATASET, revision) == expected


def test_resolve_hub_revision_asks_the_hub_when_online(hub_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    asked = []

    def dataset_info(self, repo, revision=None, timeout=None):
        asked.append((repo, revision))
        return SimpleNamespace(sha=SHA_B)

    monkeypatch.setattr("huggingface_hub.HfApi.dataset_info", dataset_info)
    _cache_ref(hub_cache, HUB_DATASET, SHA_A)  # stale: the hub's answer wins
    assert data.resolve_hub_revision(HUB_DATASET) == SHA_B and asked == [(HUB_DATASET, "main")]

    def unreachable(self, repo, revision=None, timeout=None):
        raise OSError("no route to host")

    monkeypatch.setattr("huggingface_hub.HfApi.dataset_info", unreachable)
    assert data.resolve_hub_revision(HUB_DATASET) == SHA_A  # falls back to the cache


def _task_config(root: Path, task: str) -> dict:
    """The task's config as lmms-eval reads it (includes resolved)."""
    from lmms_eval import utils

    return utils.load_yaml_config(str(root / registry.TASK_FOLDER / f"{task}.yaml"), mode="simple")


def test_hub_tasks_record_and_pin_the_commit(hub_cache):
    _cache_ref(hub_cache, HUB_DATASET, SHA_A)
    root = registry.task_root("hub")
    assert root != registry.packaged_task_root() and registry.is_our_task_root(root)
    cfg = _task_config(root, "ecgbench_csn")
    assert cfg["metadata"]["data_source"] == f"hub:{HUB_DATASET}@{SHA_A}"
    assert cfg["dataset_path"] == HUB_DATASET and cfg["dataset_kwargs"] == {"revision": SHA_A}
    assert cfg["dataset_name"] == "csn-test-no-cot"
    # a new commit on main: a new folder, the old one untouched
    _cache_ref(hub_cache, HUB_DATASET, SHA_B)
    newer = registry.task_root()
    assert newer != root and _task_config(newer, "ecgbench_ptb")["metadata"]["data_source"].endswith(SHA_B)
    assert _task_config(root, "ecgbench_ptb")["metadata"]["data_source"].endswith(SHA_A)


def test_named_hub_repo_and_revision_are_used(hub_cache):
    fork = "someone/ECGBench-fork"
    _cache_ref(hub_cache, fork, SHA_B, "v2")
    cfg = _task_config(registry.task_root(f"hub:{fork}@v2"), "ecgbench_arena")
    assert cfg["metadata"]["data_source"] == f"hub:{fork}@{SHA_B}"
    assert cfg["dataset_path"] == fork and cfg["dataset_kwargs"] == {"revision": SHA_B}


def test_unresolvable_commit_falls_back_to_the_packaged_tasks(hub_cache, caplog):
    assert registry.task_root("hub") == registry.packaged_task_root()
    assert "could not resolve the hub data's commit" in caplog.text
    cfg = _task_config(registry.packaged_task_root(), "ecgbench_csn")
    assert cfg["metadata"]["data_source"] == registry.PACKAGED_DATA_SOURCE and "dataset_kwargs" not in cfg


def test_parse_hub_source():
    assert data.parse_hub_source(f"hub:{HUB_DATASET}@{SHA_A}") == (HUB_DATASET, SHA_A)
    assert data.parse_hub_source(f"hub:{HUB_DATASET}") == (HUB_DATASET, None)
    assert data.parse_hub_source("sha256:abc") is None and data.parse_hub_source(None) is None


# ---- compare and validate -------------------------------------------------------------------
@pytest.fixture(scope="module")
def revision_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("revisions")
    recs, resps = runs.synthetic_run(seed=1, skill=0.6, scale=0.02, item_seed=0)
    recs = {k: v for k, v in recs.items() if k in ("csn-test-no-cot", "mmmu-ecg")}
    out = {}
    for name, source in (("at_a", f"hub:{HUB_DATASET}@{SHA_A}"), ("at_a_too", f"hub:{HUB_DATASET}@{SHA_A}"),
                         ("at_b", f"hub:{HUB_DATASET}@{SHA_B}"), ("unrecorded", f"hub:{HUB_DATASET}")):
        out[name] = runs.write_run(root, name, recs, {k: resps[k] for k in recs}, data_source=source)
    return out


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_compare_same_revision(revision_runs, capsys):
    rc, out, err = _cli(capsys, "compare", str(revision_runs["at_a"]), str(revision_runs["at_a_too"]),
                        "--resamples", "20")
    assert rc == 0 and "Different hub data revisions" not in out and "warning" not in err


@pytest.mark.parametrize("other", ["at_b", "unrecorded"])
def test_compare_refuses_other_revisions_unless_allowed(revision_runs, other, capsys):
    a, b = str(revision_runs["at_a"]), str(revision_runs[other])
    rc, _out, err = _cli(capsys, "compare", a, b, "--resamples", "20")
    assert rc == 2 and "hub data revision differs" in err and "--allow-revision-mismatch" in err
    rc, out, err = _cli(capsys, "compare", a, b, "--resamples", "20", "--allow-revision-mismatch", "--format", "json")
    assert rc == 0 and json.loads(out)["data_revisions_differ"] == ["csn-test-no-cot", "mmmu-ecg"]
    assert "compared across hub data revisions" in err


def test_compare_still_refuses_other_data(revision_runs, tmp_path, capsys):
    recs, resps = runs.synthetic_run(seed=1, skill=0.6, scale=0.02, item_seed=0)
    local = runs.write_run(tmp_path, "local", {"mmmu-ecg": recs["mmmu-ecg"]}, {"mmmu-ecg": resps["mmmu-ecg"]},
                           data_source="sha256:" + "f" * 64)
    rc, _out, err = _cli(capsys, "compare", str(revision_runs["at_a"]), str(local), "--allow-revision-mismatch")
    assert rc == 2 and "data source differs" in err


def _submission(run: Path, tmp_path: Path, name: str) -> dict:
    return submission.build_submission(runs.load_run(run), name, resamples=10, seed=0)


def test_validate_refuses_mixed_revisions_unless_allowed(revision_runs, tmp_path, capsys):
    doc = _submission(revision_runs["at_a"], tmp_path, "a")
    errors, notes = submission.validate_submission(doc)
    assert errors == [] and not any("revision" in n for n in notes)
    doc["tasks"]["mmmu-ecg"]["data_source"] = f"hub:{HUB_DATASET}@{SHA_B}"  # one subset from another revision
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(doc))
    rc, _out, err = _cli(capsys, "validate", str(path))
    assert rc == 1 and "different revisions of the hub data" in err and SHA_B in err
    rc, out, _err = _cli(capsys, "validate", str(path), "--allow-revision-mismatch")
    assert rc == 0 and "MIXED DATA REVISIONS" in out


def test_validate_notes_an_unrecorded_revision(revision_runs, tmp_path):
    errors, notes = submission.validate_submission(_submission(revision_runs["unrecorded"], tmp_path, "u"))
    assert errors == [] and any("revision not recorded for csn-test-no-cot, mmmu-ecg" in n for n in notes)
