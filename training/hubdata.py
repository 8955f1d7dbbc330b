"""ECGInstruct as the hub ships it: download, extract the image shards, record what was done.

`PULSE-ECG/ECGInstruct` holds the training JSON (`ECGInstruct.json`, LLaVA records whose `image`
is a path such as `mimic_v4/p1000/.../40689238-0.png`) and the ECG images packed as
`shard_*.tar.gz`. `fetch` puts them in one folder the recipe reads:

    DIR/ECGInstruct.json                 data_path=
    DIR/images/...                       image_folder= (the shards' members, extracted)
    DIR/.ecgbench/fetch.json             repo, requested revision, the commit, every file's size + sha256
    DIR/.ecgbench/extracted/<shard>.json one marker per extracted shard: size, sha256, members, refused

The download goes through the Hugging Face cache (`snapshot_download`: resumable, and offline
with `HF_HUB_OFFLINE=1` when the cache holds the snapshot, as the ECGBench loader works). Shards
are extracted by a process pool, each read once from disk through a hashing reader; a shard whose
marker has its current size and checksum is skipped. Members that would land outside the image
folder (absolute paths, `..`, links pointing out) are refused by tarfile's `data` filter and
named, the rest of the shard is still extracted; a shard that is not a readable gzip/tar (or whose
bytes differ from the hub's checksum) is named and its partial files removed; its marker says
"corrupt", so a second run reports it again without re-reading the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

# The ECGBench loader's offline switches (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), read the same way.
from pulse_tasks.data.sources import hub_offline

HUB_REPO = "PULSE-ECG/ECGInstruct"
SHARD_PATTERN = "shard_*.tar.gz"
DATA_PATTERNS = ("*.json", "*.jsonl")  # the training records (root of the repo)
HUB_PATTERNS = (SHARD_PATTERN, *DATA_PATTERNS, "README.md")
DATA_FILE = "ECGInstruct.json"  # preferred when the repo holds several JSON files
IMAGE_DIR = "images"  # the shards are extracted here
STATE_DIR = ".ecgbench"  # fetch record, per-shard markers, scan indexes
MANIFEST_FILE = "fetch.json"
MARKER_DIR = "extracted"
HASH_CHUNK = 1 << 20  # 1 MiB reads: flat memory on multi-GB shards
_SHA256 = re.compile(r"[0-9a-f]{64}")


class FetchError(RuntimeError):
    """The data could not be downloaded (offline without a cached copy, unknown repo or revision)."""


# --------------------------------------------------------------------------- download


@dataclass
class Snapshot:
    """The hub files at one commit, as local paths (in the Hugging Face cache)."""

    repo: str
    revision: str | None  # as requested (None: the default branch)
    commit: str  # the snapshot's commit sha
    root: Path

    def files(self, patterns: Iterable[str]) -> list[Path]:
        found = {p for pattern in patterns for p in self.root.glob(pattern) if p.is_file()}
        return sorted(found, key=_natural_key)


def download(repo: str = HUB_REPO, revision: str | None = None) -> Snapshot:
    """`snapshot_download` of the JSON and the shards; offline, the cached snapshot or FetchError."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - a dependency of transformers and datasets
        raise ImportError("fetching needs huggingface_hub: pip install huggingface_hub") from exc
    offline = hub_offline()
    try:
        root = Path(snapshot_download(repo, repo_type="dataset", revision=revision,
                                      allow_patterns=list(HUB_PATTERNS), local_files_only=offline))
    except Exception as exc:
        from huggingface_hub import constants

        where = f"the Hugging Face cache ({constants.HF_HUB_CACHE})"
        if offline:
            raise FetchError(f"{repo}@{revision or 'main'} is not in {where} and HF_HUB_OFFLINE/HF_DATASETS_OFFLINE "
                             f"forbids the download: run `ecgbench-train data fetch` once with network, or copy a "
                             f"filled cache here (HF_HOME / HF_HUB_CACHE) ({type(exc).__name__}: {exc})") from exc
        raise FetchError(f"downloading {repo}@{revision or 'main'} failed: {type(exc).__name__}: {exc}") from exc
    # Cache snapshots live in snapshots/<commit>/: the folder name is the commit the files are at.
    commit = root.name if re.fullmatch(r"[0-9a-f]{40}", root.name) else (revision or "unknown")
    return Snapshot(repo, revision, commit, root)


def hub_sha256(path: Path) -> str | None:
    """The sha256 the hub published for an LFS file: the cache names its blob by it (else None)."""
    name = Path(os.path.realpath(path)).name
    return name if _SHA256.fullmatch(name) else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_checksum(path: Path) -> str:
    """sha256 of a file: the hub's name for it when it is a cached LFS blob, else computed."""
    return hub_sha256(path) or sha256_file(path)


# --------------------------------------------------------------------------- extraction


@dataclass
class ShardResult:
    """What extracting one shard did."""

    shard: str
    status: str  # "extracted" | "skipped" (marker current) | "corrupt"
    size: int = 0
    sha256: str = ""
    members: list[str] = field(default_factory=list)  # regular files written (relative to the image folder)
    refused: list[list[str]] = field(default_factory=list)  # [member name, why] for members the filter refused
    error: str = ""  # why the shard is corrupt
    seconds: float = 0.0

    def describe(self) -> str:
        if self.status == "corrupt":
            return f"{self.shard}: CORRUPT, not extracted ({self.error})"
        what = f"{len(self.members)} files, {self.size / 1e6:.1f} MB"
        line = f"{self.shard}: {self.status} ({what}" + (f", {self.seconds:.1f} s)" if self.status == "extracted" else ")")
        if self.refused:
            line += f"; {len(self.refused)} member(s) refused: " + ", ".join(f"{m} ({why})" for m, why in self.refused[:5])
        return line


class _HashingReader:
    """A read-only, forward-only file: tarfile's stream mode reads the shard once, we hash those bytes."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self.digest.update(chunk)
        self.bytes += len(chunk)
        return chunk

    def drain(self) -> None:
        """Hash what tarfile left unread (end-of-archive padding)."""
        while self.read(HASH_CHUNK):
            pass


def _has_data_filter() -> bool:
    return hasattr(tarfile, "data_filter")  # Python 3.10.12+, 3.11.4+, 3.12+


def extract_shard(shard: str | Path, dest: str | Path, expected_sha256: str | None = None) -> ShardResult:
    """Extract one .tar.gz into dest with tarfile's `data` filter; refused members are listed, not fatal.

    Runs in a pool worker: returns a plain result, never raises for a bad archive."""
    shard, dest = Path(shard), Path(dest)
    start = time.perf_counter()
    result = ShardResult(shard=shard.name, status="extracted", size=shard.stat().st_size)
    written: list[Path] = []
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with open(shard, "rb") as raw:
            reader = _HashingReader(raw)
            with tarfile.open(fileobj=reader, mode="r|gz") as tar:
                for member in tar:
                    try:
                        safe = tarfile.data_filter(member, str(dest))  # outside dest, absolute, a link out, ...
                    except tarfile.FilterError as exc:
                        result.refused.append([member.name, type(exc).__name__])
                        continue
                    if safe.isfile():
                        written.append(dest / safe.name)  # before extracting: a read error mid-file leaves half
                        result.members.append(os.path.normpath(safe.name))
                    tar.extract(safe, dest, filter="data")
            reader.drain()
        result.sha256 = reader.digest.hexdigest()
        if expected_sha256 and result.sha256 != expected_sha256:
            raise ValueError(f"sha256 {result.sha256[:12]}... differs from the hub's {expected_sha256[:12]}...")
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        for path in written:  # a half-extracted shard would pass for a complete one
            path.unlink(missing_ok=True)
        result = ShardResult(shard=shard.name, status="corrupt", size=result.size,
                             sha256=expected_sha256 or sha256_file(shard), error=f"{type(exc).__name__}: {exc}")
    result.seconds = time.perf_counter() - start
    return result


def marker_path(state: Path, shard_name: str) -> Path:
    return state / MARKER_DIR / f"{shard_name}.json"


def read_marker(state: Path, shard_name: str) -> dict[str, Any] | None:
    try:
        return json.loads(marker_path(state, shard_name).read_text())
    except (OSError, ValueError):
        return None


def read_markers(state: Path) -> list[dict[str, Any]]:
    folder = state / MARKER_DIR
    markers = []
    for path in sorted(folder.glob("*.json"), key=_natural_key) if folder.is_dir() else []:
        try:
            markers.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return markers


def _write_json(path: Path, payload: Any) -> None:
    """Atomic: a killed run leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


def extract_all(shards: list[Path], dest: Path, state: Path, jobs: int,
                progress: Callable[[ShardResult, int, int], None] | None = None) -> list[ShardResult]:
    """Extract every shard whose marker is not current, `jobs` at a time; markers written as they finish."""
    if not _has_data_filter():
        raise RuntimeError("extracting needs tarfile's data filter (Python 3.10.12+, 3.11.4+ or 3.12+)")
    results: dict[str, ShardResult] = {}
    todo: list[tuple[Path, str | None]] = []
    for shard in shards:
        size, expected = shard.stat().st_size, hub_sha256(shard)
        marker = read_marker(state, shard.name)
        # A marker counts for the same bytes only: size first (free), then the checksum (free for cache blobs).
        if marker and marker.get("size") == size and marker.get("sha256") == (expected or sha256_file(shard)):
            known = ShardResult(**{k: v for k, v in marker.items() if k in ShardResult.__dataclass_fields__})
            results[shard.name] = known if known.status == "corrupt" else dataclasses.replace(known, status="skipped")
            continue
        todo.append((shard, expected))
    done = len(results)
    for r in results.values():
        if progress:
            progress(r, done, len(shards))
    if todo:
        with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo)))) as pool:
            futures = {pool.submit(extract_shard, shard, dest, expected): shard for shard, expected in todo}
            for future in as_completed(futures):
                r = future.result()
                # Corrupt shards get a marker too: the same bytes are not tried again, only reported.
                _write_json(marker_path(state, r.shard), asdict(r))
                results[r.shard] = r
                done += 1
                if progress:
                    progress(r, done, len(shards))
    return [results[s.name] for s in shards]


# --------------------------------------------------------------------------- fetch


@dataclass
class FetchReport:
    repo: str
    revision: str | None
    commit: str
    out: Path
    data_files: list[Path]
    shards: list[ShardResult]

    @property
    def corrupt(self) -> list[ShardResult]:
        return [s for s in self.shards if s.status == "corrupt"]

    @property
    def refused(self) -> list[tuple[str, str, str]]:
        return [(s.shard, m, why) for s in self.shards for m, why in s.refused]


def install_file(src: Path, dest: Path) -> bool:
    """Copy a data file out of the cache unless dest already has its size and checksum (True: copied)."""
    if dest.is_file() and dest.stat().st_size == src.stat().st_size and sha256_file(dest) == file_checksum(src):
        return False
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return True


def fetch(out: str | Path, repo: str = HUB_REPO, revision: str | None = None, jobs: int | None = None,
          log: Callable[[str], None] = print) -> FetchReport:
    """Download (or find in the cache) the repo, install the JSON, extract the shards in parallel."""
    out = Path(out).resolve()
    state = out / STATE_DIR
    snapshot = download(repo, revision)
    log(f"{repo}: commit {snapshot.commit} ({snapshot.root})")
    data_files = snapshot.files(DATA_PATTERNS)
    shards = snapshot.files([SHARD_PATTERN])
    if not data_files:
        raise FetchError(f"{repo}@{snapshot.commit} holds no *.json/*.jsonl training records")
    out.mkdir(parents=True, exist_ok=True)
    installed = []
    for src in data_files:
        copied = install_file(src, out / src.name)
        installed.append(out / src.name)
        log(f"{src.name}: {'copied' if copied else 'up to date'} ({src.stat().st_size / 1e6:.1f} MB)")
    jobs = jobs or default_jobs()
    total_bytes = sum(s.stat().st_size for s in shards)
    log(f"{len(shards)} shards, {total_bytes / 1e9:.2f} GB, {min(jobs, max(1, len(shards)))} parallel workers "
        f"-> {out / IMAGE_DIR}")
    bar = _progress_bar(total_bytes)

    def progress(r: ShardResult, done: int, total: int) -> None:
        if bar is not None:
            bar.update(r.size)
        log(f"[{done}/{total}] {r.describe()}")

    results = extract_all(shards, out / IMAGE_DIR, state, jobs, progress)
    if bar is not None:
        bar.close()
    report = FetchReport(repo, revision, snapshot.commit, out, installed, results)
    _write_json(state / MANIFEST_FILE, {
        "repo": repo, "revision": revision, "commit": snapshot.commit,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data_files": {p.name: {"size": p.stat().st_size, "sha256": file_checksum(src)}
                       for p, src in zip(installed, data_files)},
        "shards": {r.shard: {"status": r.status, "size": r.size, "sha256": r.sha256, "files": len(r.members),
                             "refused": r.refused, "error": r.error} for r in results},
    })
    return report


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _progress_bar(total: int) -> Any:
    if total <= 0 or not sys.stderr.isatty():
        return None  # the per-shard lines are the progress in logs and pipes
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="extracting", file=sys.stderr)


def _natural_key(path: Path) -> list[Any]:
    """shard_2 before shard_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]
