"""ECGInstruct as users get it (issue 27): `ecgbench-train data fetch` from the Hugging Face cache
offline, `ecgbench-train data check`, and the recipe on the fetched folder, all through the
console script.

The hub repository is built at test time in the hub's shape (`ECGInstruct.json` with records in
the real layout, `image` paths such as `mimic_v4/p10xx/.../NNNN-0.png`, and the images packed as
`shard_*.tar.gz`): shard_3 is corrupt (truncated), shard_1 carries a member named `../escape.png`
and two symlinks pointing out of the image folder, and one record points to an image that no shard ships. It is put into a Hugging Face cache the way
`snapshot_download` leaves one (blobs named by their sha256, `snapshots/<commit>/` links,
`refs/main`), and every command runs with HF_HUB_OFFLINE=1 and HF_HOME / HF_HUB_CACHE in tmp.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from test_training_recipe import _entry_point, _free_port  # the recipe tests' launcher helpers

REPO = "PULSE-ECG/ECGInstruct"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
GOOD = 18  # records whose images ship in shard_1 / shard_2
IN_CORRUPT_SHARD = 2  # records whose images only shard_3 (corrupt) has
ORPHAN_ID = "orphan-record"


def _layout_path(i: int) -> tuple[str, str]:
    """(image path in ECGInstruct's layout, the shard that ships it)."""
    if i % 3 == 0:
        return f"mimic_v4/p10{i:02d}/p100{i:05d}/s4{i:07d}/4{i:07d}-0.png", "shard_1.tar.gz"
    if i % 3 == 1:
        return f"ptb-xl/records500/00000/{i:05d}_hr-0.png", "shard_2.tar.gz"
    return f"code15_v4/{1000000 + i}-0.png", "shard_2.tar.gz"


LINKS_OUT = {"mimic_v4/absolute-link.png": "/etc/passwd", "mimic_v4/up-link.png": "../../../outside.png"}


def _tar_gz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def build_hub_repo(root: Path) -> dict[str, bytes]:
    """The repository's files: name -> content."""
    from pulse_training.smoke import make_smoke_data

    smoke = make_smoke_data(root / "smoke", n=GOOD + IN_CORRUPT_SHARD)
    source = json.loads(smoke.read_text())
    shards: dict[str, dict[str, bytes]] = {"shard_1.tar.gz": {}, "shard_2.tar.gz": {}, "shard_3.tar.gz": {}}
    records = []
    for i, record in enumerate(source):
        if i < GOOD:
            image, shard = _layout_path(i)
        else:
            image, shard = f"csn_ori_layout_papersize/JS{i:05d}-0.png", "shard_3.tar.gz"
        shards[shard][image] = (smoke.parent / record["image"]).read_bytes()
        records.append({"id": f"ecginstruct-{i:05d}", "image": image, "conversations": record["conversations"]})
        if i == 3:  # early, so it is among the first examples the check prints
            records.append({"id": ORPHAN_ID, "image": "mimic_v4/p1099/p10999999/s49999999/49999999-0.png",
                            "conversations": record["conversations"]})
    shards["shard_1.tar.gz"]["../escape.png"] = b"outside the image folder"
    files = {name: _tar_gz(members, LINKS_OUT if name == "shard_1.tar.gz" else None)
             for name, members in shards.items()}
    whole = files["shard_3.tar.gz"]
    files["shard_3.tar.gz"] = whole[: len(whole) // 2]  # truncated: a gzip stream that ends early
    files["ECGInstruct.json"] = json.dumps(records, indent=1).encode()
    files["README.md"] = b"# ECGInstruct (test copy)\n"
    return files


def fill_hub_cache(cache: Path, repo: str, commit: str, files: dict[str, bytes]) -> None:
    """The cache layout `snapshot_download` leaves: blobs/<sha256>, snapshots/<commit>/<file> links, refs/main."""
    storage = cache / f"datasets--{repo.replace('/', '--')}"
    for name, content in files.items():
        blob = storage / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = storage / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(commit)


def _env(hf_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_CACHE=str(hf_home / "hub"), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def _train_cli(*args: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*_entry_point(), *args], check=False, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    from pulse_models.testing import make_tiny_original_checkpoint

    root = tmp_path_factory.mktemp("hubdata")
    hf_home = root / "hf-home"
    fill_hub_cache(hf_home / "hub", REPO, COMMIT, build_hub_repo(root / "repo"))
    model = make_tiny_original_checkpoint(root / "model", merge_type="flat")
    env = _env(hf_home)
    out = root / "ECGInstruct"
    model_args = ["--config", "tiny.yaml", f"model_name_or_path={model}"]
    first = _train_cli("data", "fetch", "--out", str(out), "--jobs", "2", *model_args, env=env)
    second = _train_cli("data", "fetch", "--out", str(out), "--jobs", "2", *model_args, env=env)
    return {"root": root, "out": out, "model": model, "env": env, "first": first, "second": second,
            "model_args": model_args}


def test_fetch_offline_extracts_in_the_layout_the_records_use(fetched):
    first, out = fetched["first"], fetched["out"]
    log = first.stdout + first.stderr
    assert f"commit {COMMIT}" in log  # read from the cache, offline
    manifest = json.loads((out / ".ecgbench" / "fetch.json").read_text())
    assert (manifest["repo"], manifest["commit"]) == (REPO, COMMIT)
    assert json.loads((out / "ECGInstruct.json").read_text())[0]["image"].startswith("mimic_v4/")
    records = json.loads((out / "ECGInstruct.json").read_text())
    present = [r for r in records if (out / "images" / r["image"]).is_file()]
    assert len(present) == GOOD  # every image shard_1 and shard_2 ship, where the records point
    for name in ("shard_1.tar.gz", "shard_2.tar.gz", "shard_3.tar.gz"):
        marker = json.loads((out / ".ecgbench" / "extracted" / f"{name}.json").read_text())
        blob = Path(os.path.realpath(fetched["root"] / "hf-home" / "hub" / "datasets--PULSE-ECG--ECGInstruct"
                                     / "snapshots" / COMMIT / name))
        assert marker["size"] == blob.stat().st_size and marker["sha256"] == blob.name
    assert "[3/3]" in log and "extracted" in log


def test_corrupt_shard_and_escaping_member_are_named_and_refused(fetched):
    first, out = fetched["first"], fetched["out"]
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert "REFUSED shard shard_3.tar.gz: corrupt" in first.stdout
    assert "REFUSED member '../escape.png' of shard_1.tar.gz" in first.stdout
    assert not (out / "escape.png").exists() and not (out.parent / "escape.png").exists()
    # Nothing of the corrupt shard is left half-extracted: its records' images are missing, not truncated.
    assert not list((out / "images").glob("csn_ori_layout_papersize/*.png"))
    marker = json.loads((out / ".ecgbench" / "extracted" / "shard_1.tar.gz.json").read_text())
    assert marker["refused"] == [["../escape.png", "OutsideDestinationError"],
                                 ["mimic_v4/absolute-link.png", "AbsoluteLinkError"],
                                 ["mimic_v4/up-link.png", "LinkOutsideDestinationError"]]
    assert not any(p.is_symlink() for p in (out / "images").rglob("*"))
    for name in LINKS_OUT:
        assert f"REFUSED member {name!r} of shard_1.tar.gz" in first.stdout


def test_offline_without_the_snapshot_in_the_cache_says_what_to_do(tmp_path):
    proc = _train_cli("data", "fetch", "--out", str(tmp_path / "out"), env=_env(tmp_path / "empty-hf-home"))
    assert proc.returncode == 2
    assert f"{REPO}@main is not in the Hugging Face cache" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_second_fetch_extracts_nothing(fetched):
    second = fetched["second"]
    log = second.stdout
    assert "0 shard(s) extracted, 2 already there" in log, log[-3000:]
    assert "shard_1.tar.gz: skipped" in log and "shard_2.tar.gz: skipped" in log
    assert "shard_3.tar.gz: CORRUPT" in log  # still named, from its marker, without re-reading it
    assert "up to date" in log  # the JSON is not copied again
    assert second.returncode == 1


def test_check_reports_the_orphan_and_exits_1(fetched):
    out, env = fetched["out"], fetched["env"]
    proc = _train_cli("data", "check", str(out), "--jobs", "2", *fetched["model_args"], env=env)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    missing = next(line for line in proc.stdout.splitlines() if line.strip().startswith("missing_image"))
    assert missing.split()[1] == str(1 + IN_CORRUPT_SHARD) and ORPHAN_ID in missing
    assert f"records: {GOOD} of {GOOD + IN_CORRUPT_SHARD + 1} kept" in proc.stdout
    assert f"data_path={out / 'ECGInstruct.json'} image_folder={out / 'images'}" in proc.stdout
    assert "refused archive members" in proc.stdout and "../escape.png" in proc.stdout
    assert "corrupt shards (not extracted): shard_3.tar.gz" in proc.stdout
    assert "result: PROBLEMS" in proc.stdout
    allowed = _train_cli("data", "check", str(out), "--allow-missing", "--jobs", "1", *fetched["model_args"], env=env)
    assert allowed.returncode == 0 and "result: OK (3 records will be skipped, allowed)" in allowed.stdout


@pytest.mark.slow
def test_tiny_recipe_trains_on_the_fetched_folder(fetched):
    out, env = fetched["out"], fetched["env"]
    run = fetched["root"] / "run1"
    env = dict(env, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    proc = _train_cli(*fetched["model_args"], f"data_path={out / 'ECGInstruct.json'}",
                      f"image_folder={out / 'images'}", f"output_dir={run}", "max_steps=4", "save_steps=100",
                      env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads((run / "data_summary.json").read_text())
    assert (summary["kept"], summary["skipped"]["missing_image"]) == (GOOD, 1 + IN_CORRUPT_SHARD)
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and all(h["loss"] == h["loss"] for h in state["log_history"] if "loss" in h)
    assert "data: reusing the index" in proc.stderr  # `data check` (the end of fetch) indexed the folder


@pytest.mark.slow
def test_two_process_run_reuses_the_check_index_and_scans_on_both_ranks_without_one(fetched):
    out, env = fetched["out"], fetched["env"]
    base = [*fetched["model_args"], f"data_path={out / 'ECGInstruct.json'}", f"image_folder={out / 'images'}",
            "deepspeed=null", "max_steps=2", "save_steps=100", "per_device_train_batch_size=2"]

    def torchrun(*overrides: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "pulse_training.recipe", *base, *overrides]
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        return proc

    # Remove an image the index counts as present: a run that scanned would skip its record.
    records = json.loads((out / "ECGInstruct.json").read_text())
    gone = out / "images" / records[0]["image"]
    saved = gone.read_bytes()
    gone.unlink()
    try:
        indexed = torchrun(f"output_dir={fetched['root'] / 'run2'}")
    finally:
        gone.write_bytes(saved)
    log = indexed.stdout + indexed.stderr
    assert "data: reusing the index" in log and "scanning" not in log
    assert json.loads((fetched["root"] / "run2" / "data_summary.json").read_text())["kept"] == GOOD

    # Other inputs (a stat-only image check): no index has this key, so both ranks scan a half each.
    fresh = torchrun(f"output_dir={fetched['root'] / 'run3'}", "image_check=exists")
    assert f"scanning {GOOD + IN_CORRUPT_SHARD + 1} records on 2 ranks" in fresh.stdout + fresh.stderr
    sharded = json.loads((fetched["root"] / "run3" / "data_index.json").read_text())
    check = _train_cli("data", "check", str(out), "--fast", "--jobs", "1", *fetched["model_args"], env=env)
    assert "image_check=exists" in check.stdout
    assert "reusing" not in check.stdout
    alone = next((out / ".ecgbench" / "index").glob(f"{sharded['key']}.json"))  # the same key, computed alone
    assert json.loads(alone.read_text())["kept"] == sharded["kept"]
    assert json.loads(alone.read_text())["lengths"] == sharded["lengths"]
