"""ECGBench data: find a copy (hub or local folder), load a subset, normalize it to one schema.

Two on-disk layouts occur in the wild and both are accepted:

* hub layout: ``<config>/test-00000-of-00001.parquet`` (also ``<config>/*.parquet`` or
  ``<config>.parquet``) with columns id, image_path, image, conversations;
* JSON layout (the README's preparation script): ``<config>.json`` / ``<config>.jsonl`` with keys
  id, image (a path relative to ``images/``) and conversations.

Every loader returns the normalized columns of docs/interfaces.md ("Normalized documents").
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pulse_tasks.data.subsets import HUB_DATASET, SUBSETS, Subset, get_subset

if TYPE_CHECKING:  # datasets is imported lazily: `ecgbench --help` and parsing need no pyarrow
    import datasets

ENV_VAR = "ECGBENCH_DATA"  # names a local copy (or "hub[:REPO[@REV]]") when no argument is given
CACHE_ENV_VAR = "ECGBENCH_CACHE_DIR"  # where file checksums are cached between runs
HUB_SPLIT = "test"  # the only split ECGBench publishes
HUB_PARQUET_NAME = "test-00000-of-00001.parquet"  # file name of each config on the hub
IMAGE_DIR = "images"  # JSON layout: image paths are relative to this folder
IMAGE_TOKEN = "<image>"  # LLaVA placeholder some copies keep in the question; the image goes first anyway
SYNTHETIC_MARKER = "synthetic.json"  # root file `{"synthetic": true, ...}` written by pulse_tasks.data.synth
HUB_PREFIX = "hub"  # `--data hub` / `hub:OWNER/NAME@REV` select the hub explicitly
OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")  # either one means: never try the network
MATERIALIZE_BATCH = 128  # rows per parquet row group: ~20 MB of PNGs on real ECGBench images
HASH_CHUNK = 1 << 20  # 1 MiB reads keep checksumming multi-GB parquet files memory-flat

NORMALIZED_COLUMNS = ("id", "subset", "image", "image_path", "questions", "answers", "gold_options")
TEXT_COLUMNS = tuple(c for c in NORMALIZED_COLUMNS if c != "image")  # what load_records returns

Kind = Literal["hub", "parquet", "json"]


class DataError(ValueError):
    """A local ECGBench copy is unusable: missing/corrupt image, wrong schema, unknown layout."""


class DataUnavailableError(RuntimeError):
    """The hub cannot be reached (offline) and no local copy was named."""


@dataclass(frozen=True)
class DataSource:
    """Where ECGBench comes from: the hub (repo id + revision) or a local folder in one layout."""

    kind: Kind  # "hub", or the layout of a local folder ("parquet" hub layout, "json" README layout)
    location: str  # hub repo id ("PULSE-ECG/ECGBench") or absolute path of the local folder
    revision: str | None = None  # hub revision (branch, tag or commit); None = the default branch

    @property
    def path(self) -> Path:
        """The local folder (raises for hub sources)."""
        if self.kind == "hub":
            raise ValueError(f"{self.describe()} has no local path")
        return Path(self.location)

    def describe(self) -> str:
        """One short human-readable line."""
        if self.kind == "hub":
            return f"hub:{self.location}@{self.revision or 'main'}"
        return f"{self.location} ({self.kind} layout)"

    def fingerprint(self) -> str:
        """Identify the data exactly: the hub revision (a commit after ``pin_revision``; ``main``
        when none was given), or a sha256 over the local copy's files."""
        if self.kind == "hub":
            return f"hub:{self.location}@{self.revision or 'main'}"
        return "sha256:" + _tree_digest(self.path)

    def subsets(self) -> tuple[str, ...]:
        """Configs present in this source (all nine for the hub)."""
        if self.kind == "hub":
            return tuple(s.config for s in SUBSETS)
        return tuple(s.config for s in SUBSETS if _local_files(self, s.config))


# ----------------------------------------------------------------------------------------------
# Resolving the source


def resolve_source(data: str | os.PathLike[str] | DataSource | None = None) -> DataSource:
    """The data source: the argument, else ``$ECGBENCH_DATA``, else the hub ``PULSE-ECG/ECGBench``.

    A string ``hub`` or ``hub:OWNER/NAME[@REV]`` selects the hub; anything else must be a local
    folder in one of the two layouts.
    """
    if isinstance(data, DataSource):
        return data
    value = os.fspath(data) if data is not None else os.environ.get(ENV_VAR, "").strip()
    if not value:
        return DataSource("hub", HUB_DATASET)
    if value == HUB_PREFIX or value.startswith(HUB_PREFIX + ":"):
        spec = value[len(HUB_PREFIX) + 1:] or HUB_DATASET
        repo, _, revision = spec.partition("@")
        return DataSource("hub", repo or HUB_DATASET, revision or None)
    root = Path(value).expanduser()
    if not root.is_dir():
        origin = "--data" if data is not None else f"${ENV_VAR}"
        raise DataError(f"ECGBench data folder {str(root)!r} (from {origin}) does not exist or is not a folder.")
    return DataSource(_detect_layout(root), str(root.resolve()))


HUB_COMMIT_LENGTH = 40  # a git commit sha in hex: what pins hub data (branches and tags move)
HUB_REVISION_TIMEOUT_S = 10.0  # the hub's answer to "which commit is main?" (one small API call)


def is_commit(revision: str | None) -> bool:
    """True for a full git commit sha (40 hex digits)."""
    return bool(revision) and len(revision) == HUB_COMMIT_LENGTH and all(c in "0123456789abcdef" for c in revision)


def _cached_commit(repo: str, revision: str) -> str | None:
    """The commit a branch/tag pointed to when the hub data was last downloaded here: the
    Hugging Face cache's ``datasets--OWNER--NAME/refs/<revision>`` file."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub comes with datasets
        return None
    ref = Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}" / "refs" / revision
    try:
        sha = ref.read_text().strip()
    except OSError:
        return None
    return sha if is_commit(sha) else None


def resolve_hub_revision(repo: str, revision: str | None = None) -> str | None:
    """The commit sha of ``repo`` at ``revision`` (default branch when None): a sha as given;
    else the hub's answer (not when offline); else the local hub cache's record of the ref;
    None when neither knows (the run then records no revision)."""
    if is_commit(revision):
        return revision
    ref = revision or "main"
    if not hub_offline():
        try:
            from huggingface_hub import HfApi

            sha = HfApi().dataset_info(repo, revision=ref, timeout=HUB_REVISION_TIMEOUT_S).sha
            if is_commit(sha):
                return sha
        except Exception:  # network, auth or a missing repo: the cache may still know
            pass
    return _cached_commit(repo, ref)


def pin_revision(source: DataSource) -> DataSource:
    """A hub source with its revision resolved to a commit (unchanged when it cannot be resolved,
    or for local copies)."""
    if source.kind != "hub":
        return source
    sha = resolve_hub_revision(source.location, source.revision)
    return DataSource("hub", source.location, sha) if sha else source


def parse_hub_source(data_source: str | None) -> tuple[str, str | None] | None:
    """(repo, revision or None) of a recorded ``hub:OWNER/NAME[@REV]`` data_source; None for
    local copies (``sha256:...``) and unknown values."""
    if not data_source or not data_source.startswith(HUB_PREFIX + ":"):
        return None
    repo, _, revision = data_source[len(HUB_PREFIX) + 1:].partition("@")
    return repo, revision or None


def _detect_layout(root: Path) -> Kind:
    """Hub parquet layout wins over JSON when a folder holds both."""
    for subset in SUBSETS:
        if _parquet_files(root, subset.config):
            return "parquet"
    for subset in SUBSETS:
        if _json_file(root, subset.config):
            return "json"
    raise DataError(
        f"{root} holds no ECGBench subset: expected <config>/{HUB_PARQUET_NAME} (hub layout) or "
        f"<config>.json + {IMAGE_DIR}/ (JSON layout) for configs such as {SUBSETS[0].config!r}."
    )


def _parquet_files(root: Path, config: str) -> list[Path]:
    folder = root / config
    files = sorted(folder.rglob("*.parquet")) if folder.is_dir() else []  # also hub's refs/convert test/0000.parquet
    single = root / f"{config}.parquet"
    return files or ([single] if single.is_file() else [])


def _json_file(root: Path, config: str) -> Path | None:
    for suffix in (".json", ".jsonl"):
        candidate = root / f"{config}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _local_files(source: DataSource, config: str) -> list[Path]:
    if source.kind == "parquet":
        return _parquet_files(source.path, config)
    found = _json_file(source.path, config)
    return [found] if found else []


def is_synthetic(source: str | os.PathLike[str] | DataSource | None = None) -> bool:
    """True when the folder carries the marker written by `pulse_tasks.data.synth` (never for the hub).

    Accepts any folder (e.g. a synthetic ECGInstruct), not only ECGBench copies.
    """
    if isinstance(source, DataSource):
        root = None if source.kind == "hub" else source.path
    else:
        value = os.fspath(source) if source is not None else os.environ.get(ENV_VAR, "").strip()
        hub = not value or value == HUB_PREFIX or value.startswith(HUB_PREFIX + ":")
        root = None if hub else Path(value).expanduser()
    if root is None:
        return False
    try:
        return json.loads((root / SYNTHETIC_MARKER).read_text()).get("synthetic") is True
    except (OSError, ValueError, AttributeError):
        return False


# ----------------------------------------------------------------------------------------------
# Normalization (pure, row level)


def strip_image_token(text: str) -> str:
    """Drop a leading (or trailing) ``<image>`` placeholder and the newline next to it."""
    text = text.strip("\n") if text.startswith(IMAGE_TOKEN) or text.endswith(IMAGE_TOKEN) else text
    if text.startswith(IMAGE_TOKEN):
        text = text[len(IMAGE_TOKEN):].lstrip("\n")
    if text.endswith(IMAGE_TOKEN):
        text = text[: -len(IMAGE_TOKEN)].rstrip("\n")
    return text


def _as_text(value: Any) -> str:
    # ecgqa stores every turn as a list of strings (the question a one-element list)
    if isinstance(value, (list, tuple)):
        return "\n".join(str(v) for v in value)
    return "" if value is None else str(value)


def _as_options(value: Any) -> list[str]:
    # ecgqa gold: a list of option strings on the hub; older JSON copies may hold "a, b"
    # (the reference also splits candidates on commas, so options never contain one)
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def normalize_row(row: Mapping[str, Any], subset: str | Subset) -> dict[str, Any]:
    """One source row (hub, JSON or already normalized) -> the normalized text columns.

    Raises DataError naming the subset and id when the conversation cannot be read.
    """
    sub = subset if isinstance(subset, Subset) else get_subset(subset)
    item_id = str(row.get("id", ""))
    image_path = row.get("image_path")
    if image_path is None and isinstance(row.get("image"), str):
        image_path = row["image"]  # JSON layout: `image` is the relative path
    if "questions" in row and "answers" in row:  # already normalized: idempotence
        return {
            "id": item_id, "subset": sub.config, "image_path": str(image_path or ""),
            "questions": [strip_image_token(str(q)) for q in row["questions"]],
            "answers": [str(a) for a in row["answers"]],
            "gold_options": [str(o) for o in (row.get("gold_options") or [])],
        }
    conversations = row.get("conversations")
    if not isinstance(conversations, (list, tuple)) or not conversations:
        raise DataError(f"{sub.config} id {item_id!r}: no `conversations` list (got {type(conversations).__name__}).")
    questions: list[str] = []
    answers: list[str] = []
    gold_options: list[str] = []
    if all(isinstance(t, Mapping) and "question" in t for t in conversations):  # arena: [{question, answer}]
        questions = [strip_image_token(_as_text(t["question"])) for t in conversations]
        answers = [_as_text(t.get("answer")) for t in conversations]
    else:
        for turn in conversations:
            if not isinstance(turn, Mapping) or "from" not in turn or "value" not in turn:
                raise DataError(f"{sub.config} id {item_id!r}: a conversation turn lacks `from`/`value`: {turn!r:.120}")
            if turn["from"] == "human":
                questions.append(strip_image_token(_as_text(turn["value"])))
            elif turn["from"] == "gpt":
                if sub.rule.gold_options:
                    gold_options = _as_options(turn["value"])
                    answers.append(", ".join(gold_options))
                else:
                    answers.append(_as_text(turn["value"]))
    if not questions or len(questions) != len(answers):
        raise DataError(
            f"{sub.config} id {item_id!r}: {len(questions)} question(s) but {len(answers)} answer(s); "
            "expected alternating human/gpt turns."
        )
    return {
        "id": item_id, "subset": sub.config, "image_path": str(image_path or ""),
        "questions": questions, "answers": answers, "gold_options": gold_options,
    }


def normalized_features() -> datasets.Features:
    """The `datasets.Features` of a normalized subset."""
    from datasets import Features, Image, List, Value

    return Features({
        "id": Value("string"), "subset": Value("string"), "image": Image(),
        "image_path": Value("string"), "questions": List(Value("string")),
        "answers": List(Value("string")), "gold_options": List(Value("string")),
    })


def normalize(ds: datasets.Dataset, subset: str | Subset) -> datasets.Dataset:
    """Hub rows, JSON rows (with `image` already a path or Image) or normalized rows -> normalized.

    Images are never decoded here: only the text columns are read.
    """
    from datasets import Dataset, DatasetInfo

    sub = subset if isinstance(subset, Subset) else get_subset(subset)
    if "image" not in ds.column_names:
        raise DataError(f"{sub.config}: no `image` column (columns: {', '.join(ds.column_names)}).")
    rows = ds.select_columns([c for c in ds.column_names if c != "image"]).to_list()
    normalized = [normalize_row(r, sub) for r in rows]
    features = normalized_features()
    if ds.features == features and list(ds.column_names) == list(NORMALIZED_COLUMNS) and rows == normalized:
        return ds  # already normalized: idempotent, no copy
    images = _arrow_column(ds.cast_column("image", features["image"]), "image")
    columns: dict[str, Any] = {c: [r[c] for r in normalized] for c in TEXT_COLUMNS}
    table = Dataset.from_dict(columns, features=_text_features()).data.table
    table = table.add_column(NORMALIZED_COLUMNS.index("image"), "image", images)
    return Dataset(table.select(list(NORMALIZED_COLUMNS)), info=DatasetInfo(features=features))


def _arrow_column(ds: datasets.Dataset, column: str) -> Any:
    """One column as a pyarrow ChunkedArray, honouring any indices mapping, without decoding."""
    return ds.select_columns([column]).with_format("arrow")[:].column(column)


def _text_features() -> datasets.Features:
    features = normalized_features()
    return type(features)({c: features[c] for c in TEXT_COLUMNS})


# ----------------------------------------------------------------------------------------------
# Loading


def load_subset(subset: str, source: str | os.PathLike[str] | DataSource | None = None,
                *, check_images: bool = True) -> datasets.Dataset:
    """One subset as a normalized `datasets.Dataset` (`image` is a `datasets.Image()` column).

    For local copies every image is checked cheaply (present, header readable) unless
    ``check_images`` is false; errors name the subset, id and image path.
    """
    sub = get_subset(subset)
    src = resolve_source(source)
    if src.kind == "hub":
        return normalize(_load_hub(sub, src), sub)
    if src.kind == "parquet":
        ds = normalize(_load_local_parquet(sub, src), sub)
    else:
        ds = _load_json_dataset(sub, src)
    if check_images:
        problems = image_problems(ds, sub, src, decode=False, limit=1)
        if problems:
            raise DataError(problems[0])
    return ds


def load_records(subset: str, source: str | os.PathLike[str] | DataSource | None = None) -> list[dict[str, Any]]:
    """The normalized columns except `image`, as plain dicts (no image bytes read; for rescoring)."""
    sub = get_subset(subset)
    src = resolve_source(source)
    if src.kind == "json":
        return [normalize_row(r, sub) for r in _read_json_rows(sub, src)]
    if src.kind == "parquet":
        import pyarrow.parquet as pq

        files = _require_local_files(sub, src)
        names = set(pq.read_schema(files[0]).names)
        columns = [c for c in ("id", "image_path", "conversations", "questions", "answers", "gold_options")
                   if c in names]
        rows = [r for f in files for r in pq.read_table(f, columns=columns).to_pylist()]
        return [normalize_row(r, sub) for r in rows]
    ds = _load_hub(sub, src)
    return [normalize_row(r, sub) for r in ds.select_columns([c for c in ds.column_names if c != "image"]).to_list()]


def _require_local_files(sub: Subset, src: DataSource) -> list[Path]:
    files = _local_files(src, sub.config)
    if not files:
        expected = (f"{sub.config}/{HUB_PARQUET_NAME} or {sub.config}.parquet" if src.kind == "parquet"
                    else f"{sub.config}.json or {sub.config}.jsonl")
        present = ", ".join(src.subsets()) or "none"
        raise DataError(f"{src.path} has no subset {sub.config!r}: expected {expected}. Subsets present: {present}.")
    return files


def _load_local_parquet(sub: Subset, src: DataSource) -> datasets.Dataset:
    import datasets

    files = _require_local_files(sub, src)
    try:  # the parquet builder memory-maps (real subsets are 2-3 GB) and caches by file
        return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    except Exception as exc:  # any reader failure means a bad local file
        raise DataError(f"{sub.config}: cannot read {', '.join(map(str, files))}: {exc}") from exc


def _read_json_rows(sub: Subset, src: DataSource) -> list[dict[str, Any]]:
    path = _require_local_files(sub, src)[0]
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except (OSError, ValueError) as exc:
        raise DataError(f"{sub.config}: cannot read {path}: {exc}") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{sub.config}: {path} must hold a list of objects with id, image, conversations.")
    for row in rows:
        if not isinstance(row.get("image"), str):
            raise DataError(f"{sub.config} id {row.get('id')!r}: `image` must be a path under {IMAGE_DIR}/ "
                            f"(got {type(row.get('image')).__name__}) in {path}.")
    return rows


def _load_json_dataset(sub: Subset, src: DataSource) -> datasets.Dataset:
    from datasets import Dataset

    records = [normalize_row(r, sub) for r in _read_json_rows(sub, src)]
    columns: dict[str, Any] = {c: [r[c] for r in records] for c in TEXT_COLUMNS}
    # images stay files on disk until read; materialize() embeds them
    columns["image"] = [str(src.path / IMAGE_DIR / r["image_path"]) for r in records]
    return Dataset.from_dict({c: columns[c] for c in NORMALIZED_COLUMNS}, features=normalized_features())


_OFFLINE_HINT = (
    "Point ECGBench at a local copy with --data DIR or the {env} environment variable "
    "(a folder in hub layout `<config>/{parquet}` or JSON layout `<config>.json` + images/), "
    "which you can make on a connected machine with `ecgbench data fetch --out DIR`; "
    "for a pipeline check without the real data, `ecgbench data synth --out DIR` writes a small synthetic copy."
)


def offline_message(repo: str, config: str, reason: str) -> str:
    """The one-paragraph error shown when the hub copy is out of reach."""
    hint = _OFFLINE_HINT.format(env=ENV_VAR, parquet=HUB_PARQUET_NAME)
    return f"Cannot load ECGBench subset {config!r} from the Hugging Face hub ({repo}): {reason}. {hint}"


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE asks for no network."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_ENV_VARS)


def is_connection_error(exc: BaseException) -> bool:
    """True when exc (or its cause chain) is a network failure: no route to the hub."""
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if isinstance(seen, (ConnectionError, TimeoutError)) or any(
                k in name for k in ("Connect", "Timeout", "Offline", "LocalEntryNotFound")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _load_hub(sub: Subset, src: DataSource) -> datasets.Dataset:
    if hub_offline():
        # Offline: use the hub cache only (no network at all), else the clear error.
        return _load_local_parquet(sub, DataSource("parquet", str(_cached_snapshot(sub, src))))
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a core dependency
        raise ImportError("loading ECGBench needs `datasets`: pip install 'datasets>=3.0'") from exc
    try:
        return datasets.load_dataset(src.location, sub.config, split=HUB_SPLIT, revision=src.revision)
    except Exception as exc:  # re-raised unless it is a network failure
        if is_connection_error(exc):
            raise DataUnavailableError(offline_message(src.location, sub.config, f"{type(exc).__name__}: {exc}")) from exc
        raise


def _cached_snapshot(sub: Subset, src: DataSource) -> Path:
    reason = "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and no cached copy was found"
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise DataUnavailableError(offline_message(src.location, sub.config, reason)) from exc
    try:
        root = Path(snapshot_download(src.location, repo_type="dataset", revision=src.revision,
                                      allow_patterns=[f"{sub.config}/*"], local_files_only=True))
    except Exception as exc:  # every failure here means "not in the cache"
        raise DataUnavailableError(offline_message(src.location, sub.config, reason)) from exc
    if not _parquet_files(root, sub.config):
        raise DataUnavailableError(offline_message(src.location, sub.config, reason))
    return root


# ----------------------------------------------------------------------------------------------
# Image checks


def image_problems(ds: datasets.Dataset, subset: str | Subset, source: DataSource | None = None,
                   *, decode: bool = True, limit: int | None = None) -> list[str]:
    """Messages for missing or unreadable images, each naming subset, id and image path.

    ``decode=False`` only reads headers (fast); ``decode=True`` decodes every pixel (catches
    truncated files). Stops after ``limit`` problems.
    """
    from PIL import Image as PILImage

    sub = subset if isinstance(subset, Subset) else get_subset(subset)
    where = f" in {source.describe()}" if source is not None else ""
    images = _arrow_column(ds.cast_column("image", _undecoded_image()), "image")
    ids = ds["id"]
    paths = ds["image_path"] if "image_path" in ds.column_names else [""] * len(ids)
    problems: list[str] = []
    cells = (cell for chunk in images.chunks for cell in chunk.to_pylist())  # one chunk of bytes in memory at a time
    for item_id, rel, cell in zip(ids, paths, cells):
        data = (cell or {}).get("bytes")
        file_path = (cell or {}).get("path")
        label = f"{sub.config} id {item_id!r} image {rel or file_path!r}{where}"
        if data is None and (not file_path or not Path(file_path).is_file()):
            problems.append(f"{label}: missing image (no bytes; file {file_path!r} not found)")
            if limit and len(problems) >= limit:
                break
            continue
        try:
            with PILImage.open(io.BytesIO(data) if data is not None else file_path) as img:
                if decode:
                    img.load()
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            problems.append(f"{label}: unreadable image ({type(exc).__name__}: {exc})")
        if limit and len(problems) >= limit:
            break
    return problems


def _undecoded_image() -> Any:
    from datasets import Image

    return Image(decode=False)


# ----------------------------------------------------------------------------------------------
# Materialize


def materialize(source: str | os.PathLike[str] | DataSource | None, out_dir: str | os.PathLike[str],
                subsets: Sequence[str] | None = None) -> dict[str, Path]:
    """Write ``<out_dir>/<config>.parquet`` (normalized, images embedded) for each present subset.

    The folder is itself a valid source (parquet layout) and keeps the synthetic marker.
    """
    import pyarrow.parquet as pq
    from datasets.table import embed_table_storage

    src = resolve_source(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    configs = [get_subset(s).config for s in subsets] if subsets else list(src.subsets())
    written: dict[str, Path] = {}
    for config in configs:
        ds = load_subset(config, src)
        schema = ds.features.arrow_schema  # carries the `huggingface` features metadata (Image column)
        target = out / f"{config}.parquet"
        tmp = target.with_suffix(".parquet.tmp")
        with pq.ParquetWriter(tmp, schema) as writer:  # batch by batch: memory stays flat on 3 GB subsets
            for batch in ds.with_format("arrow").iter(batch_size=MATERIALIZE_BATCH):
                writer.write_table(embed_table_storage(batch).cast(schema), row_group_size=MATERIALIZE_BATCH)
        tmp.replace(target)  # never leave a half-written parquet behind
        written[config] = target
    if src.kind != "hub" and (src.path / SYNTHETIC_MARKER).is_file():
        shutil.copyfile(src.path / SYNTHETIC_MARKER, out / SYNTHETIC_MARKER)
    return written


# ----------------------------------------------------------------------------------------------
# Fingerprint


def cache_dir() -> Path:
    """``$ECGBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/ecgbench`` (default ``~/.cache/ecgbench``)."""
    base = os.environ.get(CACHE_ENV_VAR) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ecgbench")
    return Path(base)


def _cache_file() -> Path:
    return cache_dir() / "file-sha256.json"


_MEMORY_CACHE: dict[str, str] = {}  # "abs path|size|mtime_ns" -> sha256, for this process


def _file_sha256(path: Path, disk: dict[str, str]) -> str:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    if key in disk:
        _MEMORY_CACHE[key] = disk[key]
        return disk[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    _MEMORY_CACHE[key] = disk[key] = digest.hexdigest()
    return disk[key]


def _tree_digest(root: Path) -> str:
    """sha256 over (relative path, size, file sha256) of every non-hidden file under root."""
    cache_path = _cache_file()
    try:
        disk: dict[str, str] = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        disk = {}
    before = len(disk)
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    total = hashlib.sha256()
    for path in files:
        total.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\t{_file_sha256(path, disk)}\n".encode())
    if len(disk) != before:
        try:  # a failed cache write never fails the caller
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(disk))
            tmp.replace(cache_path)
        except OSError:
            pass
    return total.hexdigest()


# ----------------------------------------------------------------------------------------------
# Checking a copy


@dataclass
class SubsetCheck:
    """What `check_source` found for one subset."""

    config: str
    expected: int  # the published size
    n: int = 0  # items found
    present: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.present:
            return "absent"
        if self.problems:
            return "error"
        return "complete" if self.n == self.expected else "partial"


@dataclass
class CheckReport:
    """Result of `check_source`: per-subset counts and problems."""

    source: str
    fingerprint: str
    synthetic: bool
    subsets: list[SubsetCheck]

    @property
    def ok(self) -> bool:
        return not any(s.problems for s in self.subsets) and any(s.present for s in self.subsets)

    @property
    def complete(self) -> bool:
        return all(s.status == "complete" for s in self.subsets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "fingerprint": self.fingerprint, "synthetic": self.synthetic,
            "ok": self.ok, "complete": self.complete,
            "subsets": [{"config": s.config, "status": s.status, "n": s.n, "expected": s.expected,
                         "problems": s.problems} for s in self.subsets],
        }


MAX_PROBLEMS_PER_SUBSET = 20  # enough to see a pattern without flooding the terminal


def check_subset(subset: str, source: DataSource, *, decode: bool = True) -> SubsetCheck:
    """Validate one subset of a local copy: schema, turn counts, ids, every image."""
    sub = get_subset(subset)
    result = SubsetCheck(sub.config, sub.n_items)
    if not _local_files(source, sub.config):
        return result
    result.present = True
    try:
        ds = load_subset(sub.config, source, check_images=False)
    except DataError as exc:
        result.problems.append(str(exc))
        return result
    result.n = len(ds)
    expected_turns = sub.rule.turns
    seen: set[str] = set()
    for item_id, questions, options in zip(ds["id"], ds["questions"], ds["gold_options"]):
        if not item_id:
            result.problems.append(f"{sub.config}: an item has an empty id")
        elif item_id in seen:
            result.problems.append(f"{sub.config} id {item_id!r}: duplicate id")
        seen.add(item_id)
        if len(questions) != expected_turns:
            result.problems.append(f"{sub.config} id {item_id!r}: {len(questions)} turns, expected {expected_turns}")
        if sub.rule.gold_options and not options:
            result.problems.append(f"{sub.config} id {item_id!r}: empty gold option set")
    result.problems.extend(image_problems(ds, sub, source, decode=decode, limit=MAX_PROBLEMS_PER_SUBSET))
    return result


def check_source(source: str | os.PathLike[str] | DataSource, subsets: Sequence[str] | None = None,
                 *, decode: bool = True) -> CheckReport:
    """Validate a local copy subset by subset (see `check_subset`)."""
    src = resolve_source(source)
    if src.kind == "hub":
        raise DataError("`data check` validates a local copy: pass its folder (fetch one with `ecgbench data fetch`).")
    configs = [get_subset(s).config for s in subsets] if subsets else [s.config for s in SUBSETS]
    checks = [check_subset(c, src, decode=decode) for c in configs]
    return CheckReport(src.describe(), src.fingerprint(), is_synthetic(src), checks)
