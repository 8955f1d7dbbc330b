"""pulse_tasks.data.sources: both layouts, normalization, fingerprints, offline errors, `ecgbench data check`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pulse_app.cli import main
from pulse_tasks.data import sources as data
from pulse_tasks.data.subsets import SUBSETS, UnknownSubsetError

CONFIGS = [s.config for s in SUBSETS]


@pytest.fixture()
def json_copy(synth_json_dir: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the JSON-layout synthetic set (tests may break it)."""
    return Path(shutil.copytree(synth_json_dir, tmp_path / "copy"))


# ---------------------------------------------------------------------------------------------- layouts


def test_layout_detection(synth_data_dir: Path, synth_json_dir: Path) -> None:
    assert data.resolve_source(synth_data_dir).kind == "parquet"
    assert data.resolve_source(synth_json_dir).kind == "json"
    assert data.resolve_source(synth_data_dir).subsets() == tuple(CONFIGS)


def test_both_layouts_give_identical_normalized_records(synth_data_dir: Path, synth_json_dir: Path) -> None:
    for config in CONFIGS:
        hub_records = data.load_records(config, synth_data_dir)
        json_records = data.load_records(config, synth_json_dir)
        assert hub_records == json_records, config
        assert len(hub_records) == 4
        assert set(hub_records[0]) == set(data.TEXT_COLUMNS)


@pytest.mark.parametrize("config", ["ecgqa-test", "arena", "csn-test-no-cot"])
def test_load_subset_schema_and_images(synth_data_dir: Path, synth_json_dir: Path, config: str) -> None:
    hub = data.load_subset(config, synth_data_dir)
    js = data.load_subset(config, synth_json_dir)
    assert tuple(hub.column_names) == data.NORMALIZED_COLUMNS
    assert hub.features == data.normalized_features() == js.features
    text = list(data.TEXT_COLUMNS)
    assert hub.select_columns(text).to_list() == js.select_columns(text).to_list()
    assert hub.select_columns(text).to_list() == data.load_records(config, synth_data_dir)
    a, b = hub[0]["image"], js[0]["image"]  # PIL images, same pixels from either layout
    assert a.size == b.size == (320, 240)
    assert a.convert("RGB").tobytes() == b.convert("RGB").tobytes()


def test_questions_never_keep_the_image_token(synth_json_dir: Path) -> None:
    raw = json.loads((synth_json_dir / "ptb-test.json").read_text())
    assert raw[0]["conversations"][0]["value"].startswith("<image>\n")  # the JSON copy carries it ...
    for config in CONFIGS:
        for record in data.load_records(config, synth_json_dir):  # ... the normalized docs never do
            assert all("<image>" not in q for q in record["questions"])


def test_materialized_copy_is_a_source(synth_json_dir: Path, tmp_path: Path) -> None:
    import datasets

    written = data.materialize(synth_json_dir, tmp_path / "mat", subsets=["ecgqa-test", "arena"])
    assert set(written) == {"ecgqa-test", "arena"}
    source = data.resolve_source(tmp_path / "mat")
    assert source.kind == "parquet" and data.is_synthetic(source)
    for config, path in written.items():
        assert data.load_records(config, source) == data.load_records(config, synth_json_dir)
        # what lmms-eval's `dataset_path: parquet` sees: images embedded, not file references
        ds = datasets.load_dataset("parquet", data_files=[str(path)], split="train")
        assert ds.features == data.normalized_features()
        raw = ds.cast_column("image", datasets.Image(decode=False))[0]["image"]
        assert raw["bytes"][:8] == b"\x89PNG\r\n\x1a\n"


def test_jsonl_and_single_parquet_layouts(synth_json_dir: Path, synth_data_dir: Path, tmp_path: Path) -> None:
    rows = json.loads((synth_json_dir / "mmmu-ecg.json").read_text())
    jl = tmp_path / "jl"
    shutil.copytree(synth_json_dir / "images", jl / "images")
    (jl / "mmmu-ecg.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert data.resolve_source(jl).kind == "json"
    assert data.load_records("mmmu-ecg", jl) == data.load_records("mmmu-ecg", synth_json_dir)
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copyfile(synth_data_dir / "arena" / data.HUB_PARQUET_NAME, flat / "arena.parquet")
    assert data.load_records("arena", flat) == data.load_records("arena", synth_data_dir)
    with pytest.raises(data.DataError, match="no subset 'ptb-test'.*Subsets present: arena"):
        data.load_records("ptb-test", flat)


# ---------------------------------------------------------------------------------------------- normalization

HUB_ROWS = [
    ("ecgqa-test",
     {"id": "q1", "image_path": "ecgqa/1.png", "conversations": [
         {"from": "human", "value": [("<image>\nDoes this ECG show AF?\nOptions: yes, no, not sure. Only answer based "
                                     "on the given Options without any explanation.")]},
         {"from": "gpt", "value": ["yes", " not sure"]}]},
     {"questions": [("Does this ECG show AF?\nOptions: yes, no, not sure. Only answer based on the given Options "
                    "without any explanation.")], "answers": ["yes, not sure"], "gold_options": ["yes", "not sure"]}),
    ("arena",
     {"id": "a1", "image_path": "arena/1.jpg", "conversations": [
         {"question": "What is the rhythm?", "answer": "Sinus rhythm."},
         {"question": "Anything else?", "answer": "No."}]},
     {"questions": ["What is the rhythm?", "Anything else?"], "answers": ["Sinus rhythm.", "No."], "gold_options": []}),
    ("csn-test-no-cot",
     {"id": "c1", "image_path": "csn/1.png", "conversations": [
         {"from": "human", "value": "<image>\nWhich diagnosis?\nA. x\nB. y\nC. Sinus rhythm"},
         {"from": "gpt", "value": "C. Sinus rhythm"}]},
     {"questions": ["Which diagnosis?\nA. x\nB. y\nC. Sinus rhythm"], "answers": ["C. Sinus rhythm"],
      "gold_options": []}),
    ("ptb-test",  # JSON layout: `image` is the relative path, the token sits at the end
     {"id": "p1", "image": "ptb/1.png", "conversations": [
         {"from": "human", "value": "Which classes?\n<image>"}, {"from": "gpt", "value": "MI; STTC"}]},
     {"questions": ["Which classes?"], "answers": ["MI; STTC"], "gold_options": []}),
]


@pytest.mark.parametrize(("config", "row", "expected"), HUB_ROWS, ids=[r[0] for r in HUB_ROWS])
def test_normalize_row_quirks(config: str, row: dict, expected: dict) -> None:
    out = data.normalize_row(row, config)
    assert {k: out[k] for k in expected} == expected
    assert out["subset"] == config and out["id"] == row["id"]
    assert out["image_path"] == row.get("image_path", row.get("image"))
    assert data.normalize_row(out, config) == out  # idempotent


def test_normalize_dataset_is_idempotent_and_reads_hub_rows(synth_data_dir: Path) -> None:
    import datasets

    path = synth_data_dir / "ecgqa-test" / data.HUB_PARQUET_NAME
    raw = datasets.load_dataset("parquet", data_files=[str(path)], split="train")
    assert "conversations" in raw.column_names  # hub rows: list-valued ecgqa turns
    once = data.normalize(raw, "ecgqa-test")
    assert tuple(once.column_names) == data.NORMALIZED_COLUMNS
    assert all(r["gold_options"] for r in once.select_columns(["gold_options"]).to_list())
    assert data.normalize(once, "ecgqa-test") is once
    shuffled = raw.shuffle(seed=1)  # an indices mapping must not mix images and texts
    again = data.normalize(shuffled, "ecgqa-test")
    by_id = {r["id"]: r["image"].tobytes() for r in once}
    assert all(by_id[r["id"]] == r["image"].tobytes() for r in again)


@pytest.mark.parametrize("row", [
    {"id": "bad1", "conversations": None},
    {"id": "bad2", "conversations": [{"from": "human", "value": "q"}]},
    {"id": "bad3", "conversations": [{"speaker": "human", "text": "q"}]},
])
def test_schema_problems_name_subset_and_id(row: dict) -> None:
    with pytest.raises(data.DataError, match=rf"cpsc-test id '{row['id']}'"):
        data.normalize_row(row, "cpsc-test")


def test_subset_typo_suggests(synth_data_dir: Path) -> None:
    with pytest.raises(UnknownSubsetError, match="Did you mean 'ptb-test'"):
        data.load_records("ptb-tset", synth_data_dir)


# ---------------------------------------------------------------------------------------------- sources


def test_resolve_source_precedence(monkeypatch: pytest.MonkeyPatch, synth_data_dir: Path,
                                   synth_json_dir: Path) -> None:
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    assert data.resolve_source() == data.DataSource("hub", "PULSE-ECG/ECGBench")
    monkeypatch.setenv(data.ENV_VAR, str(synth_json_dir))
    assert data.resolve_source().kind == "json"
    assert data.resolve_source(synth_data_dir).kind == "parquet"  # the argument wins
    assert data.resolve_source("hub:me/copy@v1") == data.DataSource("hub", "me/copy", "v1")
    assert data.resolve_source("hub").fingerprint() == "hub:PULSE-ECG/ECGBench@main"
    with pytest.raises(data.DataError, match="does not exist"):
        data.resolve_source("/nonexistent/ecgbench")
    monkeypatch.setenv(data.ENV_VAR, "/nonexistent/env")
    with pytest.raises(data.DataError, match=r"\$ECGBENCH_DATA"):
        data.resolve_source()


def test_folder_without_subsets_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match="holds no ECGBench subset"):
        data.resolve_source(tmp_path)


def test_fingerprint_stable_and_changes_with_content(json_copy: Path) -> None:
    first = data.resolve_source(json_copy).fingerprint()
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert data.resolve_source(json_copy).fingerprint() == first  # cached by size+mtime: same answer
    (json_copy / ".cache").mkdir()
    (json_copy / ".cache" / "lock").write_text("hidden download state does not count")
    assert data.resolve_source(json_copy).fingerprint() == first
    path = json_copy / "arena.json"
    path.write_text(path.read_text().replace("heart rate", "heart-rate"))
    assert data.resolve_source(json_copy).fingerprint() != first


OFFLINE_PHRASES = ("ECGBENCH_DATA", "--data", "ecgbench data fetch --out DIR")


def test_offline_error_names_the_ways_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = data.DataSource("hub", "no-such-org/never-cached-ecgbench")  # never in any local HF cache
    with pytest.raises(data.DataUnavailableError) as info:
        data.load_subset("ptb-test", source)
    message = str(info.value)
    assert all(p in message for p in OFFLINE_PHRASES), message
    assert "'ptb-test'" in message and "\n" not in message  # one paragraph


def test_connection_error_becomes_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    for var in data.OFFLINE_ENV_VARS:
        monkeypatch.delenv(var, raising=False)

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)  # no network in tests, ever
    with pytest.raises(data.DataUnavailableError, match="ECGBENCH_DATA.*ecgbench data fetch"):
        data.load_records("arena", data.resolve_source("hub"))


def test_fetch_offline_exits_nonzero(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert main(["data", "fetch", "--out", str(tmp_path / "x"), "--subsets", "arena"]) == 2
    err = capsys.readouterr().err
    assert all(p in err for p in OFFLINE_PHRASES)


# ---------------------------------------------------------------------------------------------- bad copies


def _first_image(root: Path, config: str) -> tuple[str, Path]:
    row = json.loads((root / f"{config}.json").read_text())[0]
    return row["id"], root / "images" / row["image"]


def test_missing_image_is_named_at_load(json_copy: Path) -> None:
    item_id, image = _first_image(json_copy, "cpsc-test")
    image.unlink()
    with pytest.raises(data.DataError, match=rf"cpsc-test id '{item_id}' image '.*{image.name}'.*missing"):
        data.load_subset("cpsc-test", json_copy)


def test_corrupt_image_is_named_at_load(json_copy: Path) -> None:
    item_id, image = _first_image(json_copy, "g12-test-no-cot")
    image.write_bytes(b"not a png at all")
    with pytest.raises(data.DataError, match=rf"g12-test-no-cot id '{item_id}'.*unreadable image"):
        data.load_subset("g12-test-no-cot", json_copy)


def test_check_clean_synthetic_copy(synth_data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(synth_data_dir)]) == 0
    out = capsys.readouterr().out
    assert "[SYNTHETIC]" in out and "partial" in out and "result: OK (synthetic copy" in out
    assert main(["data", "check", str(synth_data_dir), "--strict"]) == 1  # 4 items is not the published size
    capsys.readouterr()
    assert main(["data", "check", str(synth_data_dir), "--json", "--subsets", "arena"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["synthetic"] and report["ok"]
    assert report["subsets"] == [{"config": "arena", "status": "partial", "n": 4, "expected": 50, "problems": []}]


def test_check_reports_corrupt_missing_truncated_and_schema(json_copy: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    corrupt_id, corrupt = _first_image(json_copy, "csn-test-no-cot")
    corrupt.write_bytes(b"\x00" * 64)
    missing_id, missing = _first_image(json_copy, "mmmu-ecg")
    missing.unlink()
    truncated_id, truncated = _first_image(json_copy, "ptb-test")
    truncated.write_bytes(truncated.read_bytes()[:400])  # valid header, body cut: only a full decode sees it
    rows = json.loads((json_copy / "arena.json").read_text())
    rows[1]["conversations"] = "not a list"
    (json_copy / "arena.json").write_text(json.dumps(rows))

    assert main(["data", "check", str(json_copy)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEMS FOUND" in out
    for config, item_id, path in [("csn-test-no-cot", corrupt_id, corrupt), ("mmmu-ecg", missing_id, missing),
                                  ("ptb-test", truncated_id, truncated)]:
        line = next(ln for ln in out.splitlines() if f"id '{item_id}'" in ln)
        assert config in line and path.name in line
    assert f"arena id '{rows[1]['id']}'" in out and "conversations" in out
    assert "code15-test       partial" in out  # untouched subsets still reported


def test_check_rejects_a_non_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(tmp_path)]) == 2
    assert "holds no ECGBench subset" in capsys.readouterr().err


def test_offline_uses_a_cached_hub_snapshot(monkeypatch: pytest.MonkeyPatch, synth_data_dir: Path) -> None:
    import huggingface_hub

    calls: list[dict] = []

    def cached(repo_id: str, **kwargs: object) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(synth_data_dir)  # what the HF cache would hold after an earlier online run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", cached)
    records = data.load_records("mmmu-ecg", data.resolve_source("hub"))
    assert records == data.load_records("mmmu-ecg", synth_data_dir)
    assert calls[0]["local_files_only"] is True and calls[0]["allow_patterns"] == ["mmmu-ecg/*"]


def test_fetch_mirrors_requested_subsets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import huggingface_hub

    calls: list[dict] = []
    for var in data.OFFLINE_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: calls.append({"repo": repo_id, **kw}))
    assert main(["data", "fetch", "--out", str(tmp_path), "--subsets", "ecgbench_ptb", "arena", "--revision", "v1"]) == 0
    assert calls == [{"repo": "PULSE-ECG/ECGBench", "repo_type": "dataset", "revision": "v1", "local_dir": str(tmp_path),
                      "allow_patterns": ["ptb-test/*", "arena/*", "README.md"]}]
    assert "ecgbench data check" in capsys.readouterr().out
