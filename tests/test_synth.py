"""pulse_tasks.data.synth: determinism, rhythm answers that follow the simulated rate, synthetic markers."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from pulse_app.cli import main
from pulse_tasks.data import sources as data
from pulse_tasks.data import synth

SMALL = (160, 120)  # tiny images: these tests check content, not looks


def _tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_other_images(tmp_path: Path) -> None:
    a = synth.make_ecgbench(tmp_path / "a", per_subset=2, layout="json", seed=3, image_size=SMALL)
    b = synth.make_ecgbench(tmp_path / "b", per_subset=2, layout="json", seed=3, image_size=SMALL)
    c = synth.make_ecgbench(tmp_path / "c", per_subset=2, layout="json", seed=4, image_size=SMALL)
    assert _tree_hashes(a) == _tree_hashes(b)
    ha, hc = _tree_hashes(a), _tree_hashes(c)
    images = [k for k in ha if k.endswith(".png")]
    assert len(images) == 18 and all(ha[k] != hc[k] for k in images)


def _measured_rate(signal: np.ndarray) -> float:
    """Beats per minute from R peaks of lead II (the tallest deflection of each beat)."""
    from scipy.signal import find_peaks

    lead = signal[synth.LEAD_NAMES.index("II")]
    lead = lead - np.median(lead)
    # R peaks stand well above the T waves; >=0.3 s apart even at 140 bpm (0.43 s)
    peaks, _ = find_peaks(lead, height=0.6 * lead.max(), distance=int(0.3 * synth.SAMPLING_RATE))
    return 60.0 * synth.SAMPLING_RATE / float(np.median(np.diff(peaks)))


@pytest.mark.parametrize("rhythm", synth.RHYTHMS)
def test_simulated_rate_matches_the_rhythm(rhythm: str) -> None:
    for seed in range(3):
        signal, rate = synth.simulate_ecg(rhythm, np.random.default_rng(seed))
        assert signal.shape == (12, int(synth.STRIP_SECONDS * synth.SAMPLING_RATE))
        assert synth.rhythm_of_rate(rate) == rhythm
        measured = _measured_rate(signal)
        assert synth.rhythm_of_rate(measured) == rhythm, (rhythm, rate, measured)
        assert abs(measured - rate) / rate < 0.12


def _letter_answer_text(question: str, letter: str) -> str:
    match = re.search(rf"^\(?{letter}[.)]\s*(.+)$", question, flags=re.MULTILINE)
    assert match, (question, letter)
    return match.group(1).strip().lower()


def test_rhythm_gold_answers_follow_the_rate(synth_data_dir: Path) -> None:
    meta = json.loads((synth_data_dir / data.SYNTHETIC_MARKER).read_text())["items"]
    checked = 0
    for config in data.resolve_source(synth_data_dir).subsets():
        for record in data.load_records(config, synth_data_dir):
            info = meta[record["id"]]
            assert synth.rhythm_of_rate(info["heart_rate"]) == info["rhythm"]
            assert record["id"].startswith("synth-rhythm-") == info["rhythm_question"]
            if not info["rhythm_question"]:
                continue
            name = synth.RHYTHM_NAMES[info["rhythm"]]
            question, gold = record["questions"][0], record["answers"][0]
            if config == "code15-test":
                assert gold == info["rhythm"]
            elif config == "ecgqa-test":
                asked = re.match(r"Does this ECG show (.+)\?", question)
                expected = (["yes" if asked.group(1) == name else "no"] if asked else [name])
                assert record["gold_options"] == expected
            else:  # letter subsets: the gold letter's option names the rhythm
                assert _letter_answer_text(question, gold[0]) == name
                assert len(gold) == 1 if config == "mmmu-ecg" else gold == f"{gold[0]}. {name.capitalize()}"
            checked += 1
    assert checked == 5 * 4  # five rhythm-question subsets, four items each
    assert {m["rhythm"] for m in meta.values()} == set(synth.RHYTHMS)


def test_prompt_styles(synth_data_dir: Path) -> None:
    ecgqa = data.load_records("ecgqa-test", synth_data_dir)[0]["questions"][0]
    assert "Options:" in ecgqa and ecgqa.endswith("Only answer based on the given Options without any explanation.")
    mmmu = data.load_records("mmmu-ecg", synth_data_dir)[0]["questions"][0]
    assert "Answer: X" in mmmu and "(D)" in mmmu and "(E)" not in mmmu
    csn = data.load_records("csn-test-no-cot", synth_data_dir)[0]["questions"][0]
    assert "\nH. " in csn
    ptb = data.load_records("ptb-test", synth_data_dir)[0]["questions"][0]
    assert all(label in ptb for label in ("NORM", "MI", "STTC", "CD", "HYP"))
    assert all(len(r["questions"]) == 2 for r in data.load_records("arena", synth_data_dir))


def test_everything_says_synthetic(synth_data_dir: Path, tmp_path: Path) -> None:
    assert "SYNTHETIC" in (synth_data_dir / "README.txt").read_text()
    assert synth.is_synthetic(synth_data_dir) and not synth.is_synthetic("hub")
    real_looking = tmp_path / "copy"
    (real_looking / "arena").mkdir(parents=True)
    (real_looking / "arena" / data.HUB_PARQUET_NAME).write_bytes(
        (synth_data_dir / "arena" / data.HUB_PARQUET_NAME).read_bytes())
    assert not synth.is_synthetic(real_looking)


def test_image_looks_like_a_printout() -> None:
    signal, _ = synth.simulate_ecg("NORM", np.random.default_rng(0))
    image = synth.render_ecg(signal, (320, 240))
    assert image.size == (320, 240) and image.mode == "RGB"
    pixels = np.asarray(image)
    ink = (pixels.sum(axis=2) < 100).mean()  # black trace pixels
    paper = (pixels == synth.PAPER_COLOURS["paper"]).all(axis=2).mean()
    assert 0.01 < ink < 0.2 and paper > 0.3


def test_make_instruct(tmp_path: Path) -> None:
    path = synth.make_instruct(tmp_path / "train", n=14, seed=0, image_size=SMALL)
    records = json.loads(path.read_text())
    assert len(records) == 14 and len({r["id"] for r in records}) == 14
    for record in records:
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n")
        assert all("<image>" not in t["value"] for t in turns[1:])
        assert (path.parent / "images" / record["image"]).is_file()
    assert any(len(r["conversations"]) == 4 for r in records)
    # the benchmark's answer styles: code15 label names, "C. Sinus rhythm", ecgqa option strings
    meta = json.loads((path.parent / data.SYNTHETIC_MARKER).read_text())
    template = {i: m["template"] for i, m in meta["items"].items()}
    gold = {template[r["id"]]: (r["conversations"][1]["value"], meta["items"][r["id"]]) for r in records}
    assert gold["code15-test"][0] == gold["code15-test"][1]["rhythm"]
    letter_gold, info = gold["csn-test-no-cot"]
    assert re.fullmatch(rf"[A-H]\. {synth.RHYTHM_NAMES[info['rhythm']].capitalize()}", letter_gold)
    assert synth.is_synthetic(path.parent)  # a plain folder with the marker (no ECGBench layout)


def test_cli_synth_and_instruct(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    assert main(["data", "synth", "--out", str(out), "--per-subset", "1", "--layout", "json",
                 "--image-size", "160x120"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert data.resolve_source(out).kind == "json" and synth.is_synthetic(out)
    assert main(["data", "instruct", "--out", str(tmp_path / "ins"), "--n", "3", "--image-size", "160x120"]) == 0
    assert (tmp_path / "ins" / synth.INSTRUCT_FILE).is_file()
