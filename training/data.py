"""ECGInstruct data for the recipe: LLaVA conversation records -> (input_ids, labels, pixels).

Records are LLaVA JSON (a list) or JSONL, `{id, image, conversations: [{from, value}, ...]}`,
images relative to `image_folder`; or a hub dataset id read with `datasets`. The hub dataset
PULSE-ECG/ECGInstruct holds the training JSON (`ECGInstruct.json`, 1.16M records whose `image`
is a relative path such as `mimic_v4/p1000/.../40689238-0.png`) and the ECG images packed as
`shard_*.tar.gz`: `ecgbench-train data fetch --out DIR` downloads both and extracts the shards
(training/hubdata.py), giving `data_path=DIR/ECGInstruct.json image_folder=DIR/images`.

Every record is checked once (`scan`): a record with a missing or unreadable image, no
assistant turn, a label/length mismatch from the template, or more merged tokens than
`model_max_length` is skipped and counted, never trained on and never a crash hours in. The
survivors keep only their merged length (for length grouping and token accounting); text is
re-tokenised and the image decoded lazily, per step, in the dataloader workers. The scan's
result (the index) is saved keyed by everything it depends on; `ecgbench-train data check`
computes it with a process pool (`scan_parallel`) beside the data, and the recipe reuses it, or
splits the scan across its ranks when there is none (training/recipe.py).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

IGNORE_INDEX: int = -100  # labels ignored by the loss (system, user turns, image positions, padding)
ASSISTANT_ROLE: str = "gpt"  # LLaVA's name for assistant turns (the template rejects others)
MAX_IMAGE_FALLBACKS: int = 8  # neighbours tried when an image fails at step time; more means the mount is gone
SKIP_EXAMPLES_KEPT: int = 5  # ids kept per skip reason in the summary (enough to find the pattern)

# Skip reasons, in the order they are checked (the first that applies is counted).
SKIP_REASONS: tuple[str, ...] = (
    "malformed",  # no conversations list / a turn without from+value
    "no_assistant_turn",  # nothing to supervise
    "no_image",  # ECGInstruct is image-conditioned; text-only records are not part of the recipe
    "missing_image",  # file not found under image_folder
    "unreadable_image",  # found but PIL cannot read it
    "label_mismatch",  # the template's token count disagrees with itself (LLaVA masks these whole)
    "too_long",  # text + image tokens > model_max_length (truncating would cut the answer)
)


# --------------------------------------------------------------------------- loading


def is_local_data(data_path: str) -> bool:
    """A local JSON/JSONL file (else a hub dataset id)."""
    return Path(data_path).exists() or data_path.endswith((".json", ".jsonl"))


def load_records(data_path: str, *, hub_split: str = "train", max_records: int | None = None) -> Sequence[dict]:
    """Raw LLaVA records from a JSON list, JSONL file, or a hub dataset (lazily imported)."""
    if is_local_data(data_path):
        path = Path(data_path)
        if not path.exists():
            raise FileNotFoundError(f"data_path {data_path}: no such file")
        if path.suffix == ".jsonl":
            with path.open() as f:
                records: list[dict] = []
                for line in f:
                    if line.strip():
                        records.append(json.loads(line))
                    if max_records is not None and len(records) >= max_records:
                        break
        else:
            records = json.loads(path.read_text())
            if not isinstance(records, list):
                raise ValueError(f"{data_path}: expected a JSON list of LLaVA records")
        return records[:max_records] if max_records is not None else records
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a core dependency
        raise ImportError("reading a hub dataset needs `pip install datasets`") from exc
    # Memory-mapped Arrow table: rows are materialised one at a time by the scan and __getitem__.
    ds = datasets.load_dataset(data_path, split=hub_split)
    if max_records is not None:
        ds = ds.select(range(min(max_records, len(ds))))
    return ds


# --------------------------------------------------------------------------- checking


@dataclass
class ScanSummary:
    """What the start-up scan kept and skipped (printed at start, saved as data_summary.json)."""

    total: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_merged_length: int = 0
    mean_merged_length: float = 0.0

    def skip(self, reason: str, record_id: str) -> None:
        self.skipped[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < SKIP_EXAMPLES_KEPT:
            kept.append(record_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "kept": self.kept,
            "skipped": {reason: self.skipped.get(reason, 0) for reason in SKIP_REASONS},
            "skipped_total": sum(self.skipped.values()),
            "skipped_examples": self.examples,
            "max_merged_length": self.max_merged_length,
            "mean_merged_length": round(self.mean_merged_length, 1),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScanSummary:
        return cls(
            total=d["total"], kept=d["kept"], skipped=Counter({k: v for k, v in d["skipped"].items() if v}),
            examples=d["skipped_examples"], max_merged_length=d["max_merged_length"],
            mean_merged_length=d["mean_merged_length"],
        )

    def format(self) -> str:
        d = self.to_dict()
        parts = ", ".join(f"{k} {v}" for k, v in d["skipped"].items() if v)
        return (
            f"data: {d['kept']}/{d['total']} records kept, {d['skipped_total']} skipped"
            + (f" ({parts})" if parts else "")
            + f"; merged length mean {d['mean_merged_length']}, max {d['max_merged_length']}"
        )


def _structure_problem(record: dict) -> str | None:
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        return "malformed"
    for turn in conversations:
        if not isinstance(turn, dict) or "from" not in turn or not isinstance(turn.get("value"), str):
            return "malformed"
    if not any(t["from"] == ASSISTANT_ROLE and t["value"].strip() for t in conversations):
        return "no_assistant_turn"
    if not record.get("image"):
        return "no_image"
    return None


def image_path(record: dict, image_folder: str) -> Path:
    return Path(image_folder) / str(record["image"])


def _image_size(path: Path, check: str) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) read from the header (no decode), or a skip reason."""
    if check == "none":
        return None, None
    if not path.is_file():
        return None, "missing_image"
    if check == "exists":
        return None, None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size, None
    except (OSError, UnidentifiedImageError, ValueError):
        return None, "unreadable_image"


# `tokenize_fn(conversations) -> (input_ids, labels, info)`; `image_tokens_fn((w, h) | None) -> int`
TokenizeFn = Callable[[list[dict]], tuple[list[int], list[int], dict]]
ImageTokensFn = Callable[[tuple[int, int] | None], int]


def _mismatch(info: Any) -> bool:
    """pulse_models.conversation flags a label/length disagreement (its labels are then all ignored)."""
    if not isinstance(info, dict):
        return False
    return bool(info.get("mismatch"))


def scan(
    records: Sequence[dict],
    *,
    image_folder: str,
    tokenize_fn: TokenizeFn,
    image_tokens_fn: ImageTokensFn,
    image_token_id: int,
    max_length: int,
    image_check: str = "open",
    stop_after_kept: int | None = None,
    offset: int = 0,
) -> tuple[list[int], list[int], ScanSummary]:
    """Check every record once: (kept indices, their merged lengths, summary).

    `stop_after_kept` ends the scan early (--inspect needs the first few records, not 1.16M);
    the summary then covers the records scanned. `offset`: `records` is a slice of a larger
    list starting there (kept indices and default ids are then the larger list's).
    """
    summary = ScanSummary(total=len(records))
    kept: list[int] = []
    lengths: list[int] = []
    for index in range(len(records)):
        if stop_after_kept is not None and len(kept) >= stop_after_kept:
            summary.total = index
            break
        record = records[index]
        record_id = str(record.get("id", offset + index)) if isinstance(record, dict) else str(offset + index)
        if not isinstance(record, dict):
            summary.skip("malformed", record_id)
            continue
        problem = _structure_problem(record)
        if problem is None:
            size, problem = _image_size(image_path(record, image_folder), image_check)
        if problem is None:
            try:
                input_ids, _labels, info = tokenize_fn(record["conversations"])
            except ValueError:  # turns that do not alternate human/gpt
                problem = "malformed"
            else:
                if _mismatch(info):
                    problem = "label_mismatch"
                else:
                    # info["total_len"]: text length before the template's own truncation.
                    text_len = int(info.get("total_len", len(input_ids))) if isinstance(info, dict) else len(input_ids)
                    n_img = sum(1 for t in input_ids if t == image_token_id)
                    length = text_len - n_img + n_img * image_tokens_fn(size)
                    if length > max_length:
                        problem = "too_long"
        if problem is not None:
            summary.skip(problem, record_id)
            continue
        kept.append(offset + index)
        lengths.append(length)
    summary.kept = len(kept)
    if lengths:
        summary.max_merged_length = max(lengths)
        summary.mean_merged_length = sum(lengths) / len(lengths)
    return kept, lengths, summary


ScanResult = tuple[list[int], list[int], ScanSummary]


def merge_scans(parts: Sequence[ScanResult]) -> ScanResult:
    """One result from scans of consecutive slices, in order (what one `scan` of them all gives)."""
    merged = ScanSummary()
    kept: list[int] = []
    lengths: list[int] = []
    for part_kept, part_lengths, part in parts:
        kept += part_kept
        lengths += part_lengths
        merged.total += part.total
        merged.skipped.update(part.skipped)
        for reason, ids in part.examples.items():
            have = merged.examples.setdefault(reason, [])
            have += ids[: SKIP_EXAMPLES_KEPT - len(have)]
    merged.kept = len(kept)
    if lengths:
        merged.max_merged_length = max(lengths)
        merged.mean_merged_length = sum(lengths) / len(lengths)
    return kept, lengths, merged


def slice_bounds(n: int, parts: int, part: int) -> tuple[int, int]:
    """[start, stop) of the part-th of `parts` near-equal consecutive slices of n items."""
    return n * part // parts, n * (part + 1) // parts


_WORKER_SCAN: dict[str, Any] = {}  # the scan's arguments, set once per pool worker


def _init_scan_worker(scan_kwargs: dict[str, Any]) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core per worker, no nested pools
    torch.set_num_threads(1)
    _WORKER_SCAN.update(scan_kwargs)


def _scan_chunk(offset: int, chunk: list[dict]) -> ScanResult:
    return scan(chunk, offset=offset, **_WORKER_SCAN)


SCAN_CHUNK = 2000  # records per pool task at most: ~1-2 s of work, small enough to balance the workers


def scan_parallel(records: Sequence[dict], *, workers: int, chunk_size: int = SCAN_CHUNK,
                  progress: Callable[[int, int], None] | None = None, **scan_kwargs: Any) -> ScanResult:
    """`scan` on `workers` processes (chunks of `chunk_size` records); workers=1 scans in this process.

    `scan_kwargs` (tokenize_fn, image_tokens_fn, ...) must pickle: each worker gets them once.
    Workers are spawned, not forked: the caller may hold threads (tokenizers, torch) a fork would copy
    mid-lock. `progress(records_done, total)` is called as chunks finish."""
    n = len(records)
    chunk_size = max(1, min(chunk_size, -(-n // (workers * 4))))  # small sets still spread over every worker
    if workers <= 1 or n <= 1:
        result = scan(records, **scan_kwargs)
        if progress:
            progress(n, n)
        return result
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    starts = list(range(0, n, chunk_size))
    parts: dict[int, ScanResult] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_scan_worker,
                             initargs=(scan_kwargs,)) as pool:
        # Submitted lazily, a few per worker: 1.16M pickled records are never all in flight at once.
        pending: dict[Any, int] = {}
        upcoming = iter(starts)
        done = 0
        from concurrent.futures import FIRST_COMPLETED, wait

        def submit_next() -> None:
            start = next(upcoming, None)
            if start is not None:
                chunk = [records[i] for i in range(start, min(start + chunk_size, n))]
                pending[pool.submit(_scan_chunk, start, chunk)] = start

        for _ in range(workers * 2):
            submit_next()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                start = pending.pop(future)
                parts[start] = future.result()
                done += parts[start][2].total
                submit_next()
            if progress:
                progress(done, n)
    return merge_scans([parts[s] for s in starts])


# --------------------------------------------------------------------------- dataset


class InstructDataset(torch.utils.data.Dataset):
    """Kept records, tokenised and with pixels, one at a time (called in dataloader workers).

    `process_image_fn(PIL.Image) -> (pixel tensor [tiles, 3, 336, 336], image_size)` is
    pulse_models' anyres processing; the recipe binds it.
    """

    def __init__(
        self,
        records: Sequence[dict],
        kept: list[int],
        lengths: list[int],
        *,
        image_folder: str,
        tokenize_fn: TokenizeFn,
        process_image_fn: Callable[[Any], tuple[torch.Tensor, Any]],
    ) -> None:
        self.records = records
        self.kept = kept
        self.lengths = lengths  # merged lengths, for LengthGroupedSampler and token accounting
        self.image_folder = image_folder
        self.tokenize_fn = tokenize_fn
        self.process_image_fn = process_image_fn

    def __len__(self) -> int:
        return len(self.kept)

    def record_id(self, i: int) -> str:
        return str(self.records[self.kept[i]].get("id", self.kept[i]))

    def text_item(self, i: int) -> dict[str, Any]:
        """Token ids and labels only (used by --inspect; no image decode)."""
        record = self.records[self.kept[i]]
        input_ids, labels, _info = self.tokenize_fn(record["conversations"])
        return {"id": self.record_id(i), "input_ids": list(input_ids), "labels": list(labels)}

    def __getitem__(self, i: int) -> dict[str, Any]:
        from PIL import Image

        for attempt in range(MAX_IMAGE_FALLBACKS + 1):
            j = (i + attempt) % len(self)
            path = image_path(self.records[self.kept[j]], self.image_folder)
            try:
                with Image.open(path) as img:
                    pixels, image_size = self.process_image_fn(img.convert("RGB"))
                break
            except (OSError, RuntimeError, ValueError) as exc:  # PIL errors; pulse_models' ImageLoadError
                # Passed the start-up check, unreadable now (truncated file, flaky mount): train on a
                # neighbour instead of killing a multi-hour run; the warning names the record.
                logger.warning("record %s: image %s unreadable (%s); using the next record", self.record_id(j), path, exc)
        else:
            raise RuntimeError(
                f"{MAX_IMAGE_FALLBACKS + 1} consecutive images unreadable from {self.image_folder}: is it mounted?"
            )
        item = self.text_item(j)
        return {
            "input_ids": torch.tensor(item["input_ids"], dtype=torch.long),
            "labels": torch.tensor(item["labels"], dtype=torch.long),
            "pixel_values": pixels,
            "image_size": image_size,
            "merged_length": self.lengths[j],
        }


@dataclass
class Collator:
    """Right-pads text to the batch's longest; images stay a list (anyres tile counts differ)."""

    pad_token_id: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        longest = max(len(it["input_ids"]) for it in items)
        input_ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            input_ids[row, :n] = it["input_ids"]
            labels[row, :n] = it["labels"]
            attention_mask[row, :n] = 1
        return {
            "input_ids": input_ids,  # [batch, longest text]
            "labels": labels,  # [batch, longest text], IGNORE_INDEX where unsupervised
            "attention_mask": attention_mask,
            "images": [it["pixel_values"] for it in items],  # batch x [tiles, 3, 336, 336]
            "image_sizes": [it["image_size"] for it in items],
            # Counters for throughput.StepCounts, popped before forward: MFU needs the merged
            # (text + image) length the language model really saw and the tiles CLIP encoded.
            "num_merged_tokens": torch.tensor(sum(int(it["merged_length"]) for it in items)),
            "num_merged_sq": torch.tensor(sum(int(it["merged_length"]) ** 2 for it in items)),
            "num_image_tiles": torch.tensor(sum(int(it["pixel_values"].shape[0]) for it in items)),
        }


INDEX_FILE = "data_index.json"  # the scan's result in the run folder, reused by a resumed run with the same inputs
INDEX_DIR = Path(".ecgbench") / "index"  # beside the data file: <key>.json, written by `ecgbench-train data check`


def scan_key(**inputs: Any) -> str:
    """Fingerprint of everything the scan's result depends on.

    A local data file adds its resolved path, size and mtime; a folder filled by `data fetch`
    adds its shard markers (name, size, sha256, status), so extracting another shard or a
    re-download invalidates the index while a `touch` of the image folder does not."""
    import hashlib

    data_path = str(inputs.get("data_path", ""))
    if Path(data_path).is_file():
        stat = Path(data_path).stat()
        inputs["data_file"] = [str(Path(data_path).resolve()), stat.st_size, stat.st_mtime_ns]
        from .hubdata import STATE_DIR, read_markers

        markers = read_markers(Path(data_path).resolve().parent / STATE_DIR)
        if markers:
            inputs["shards"] = [[m.get("shard"), m.get("size"), m.get("sha256"), m.get("status")] for m in markers]
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_index_path(data_path: str, key: str) -> Path | None:
    """Where `data check` puts the index for a local data file (None for a hub dataset id)."""
    path = Path(data_path)
    return path.resolve().parent / INDEX_DIR / f"{key}.json" if path.is_file() else None


def _index_file(where: str | os.PathLike) -> Path:
    where = Path(where)
    return where / INDEX_FILE if where.is_dir() or where.suffix != ".json" else where


def load_index(where: str | os.PathLike, key: str) -> ScanResult | None:
    """The saved scan under `where` (a run folder, or an index file) if it has this key, else None."""
    try:
        saved = json.loads(_index_file(where).read_text())
    except (OSError, ValueError):
        return None
    if saved.get("key") != key:
        return None
    return saved["kept"], saved["lengths"], ScanSummary.from_dict(saved["summary"])


def save_index(where: str | os.PathLike, key: str, kept: list[int], lengths: list[int],
               summary: ScanSummary) -> Path | None:
    """Best effort (a read-only data folder, a full disk): a failed write only costs a later scan."""
    path = _index_file(where)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"key": key, "kept": kept, "lengths": lengths, "summary": summary.to_dict()}
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)  # ranks and `data check` may race: readers see a whole file
        return path
    except OSError as exc:
        logger.warning("could not save the data index to %s (%s); a later run will scan again", path, exc)
        return None


def write_summary(summary: ScanSummary, output_dir: str | os.PathLike) -> Path:
    path = Path(output_dir) / "data_summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return path
