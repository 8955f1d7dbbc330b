"""Hub ids (issue 14, item 3): `trust_remote_code=true` fetches the repo's code files too; a repo
that ships only pickled `*.bin` weights loads through transformers' weights_only path, or fails
with a message saying what to convert (and never runs the pickle's code).

The hub is unreachable here: `huggingface_hub.snapshot_download` is replaced by a fake hub that
copies, from a local "repo" folder, exactly the files the allow_patterns select (as the real one).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from pulse_models.checkpoint import CheckpointFormatError
from pulse_models.loading import detect_format, resolve_checkpoint_dir
from pulse_models.testing import make_ecg_like_image, make_tiny_hf_checkpoint, make_tiny_original_checkpoint

CODE_FILE = "modeling_custom.py"  # a repo's remote code (never imported here)


class _RunsCode:
    """A pickle that would run a shell command on load (what weights_only=True must refuse)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def fake_repos(tmp_path_factory) -> dict[str, Path]:
    from safetensors.torch import load_file

    root = tmp_path_factory.mktemp("fake-hub")
    hf = make_tiny_hf_checkpoint(root / "org--tiny-code")
    (hf / CODE_FILE).write_text("raise RuntimeError('remote code must not run in this test')\n")
    weights = load_file(str(hf / "model.safetensors"))
    pickled = shutil.copytree(hf, root / "org--tiny-bin", ignore=shutil.ignore_patterns("*.safetensors", "*.py"))
    torch.save(weights, pickled / "pytorch_model.bin")
    evil = shutil.copytree(pickled, root / "org--tiny-evil")
    marker = root / "PICKLE_CODE_RAN"
    torch.save({**weights, "extra": _RunsCode(marker)}, evil / "pytorch_model.bin")
    original = make_tiny_original_checkpoint(root / "org--tiny-original-bin")
    torch.save(load_file(str(original / "model.safetensors")), original / "pytorch_model.bin")
    (original / "model.safetensors").unlink()
    return {"org/tiny-code": hf, "org/tiny-bin": pickled, "org/tiny-evil": evil,
            "org/tiny-original-bin": original, "marker": marker}


@pytest.fixture
def fake_hub(fake_repos, tmp_path, monkeypatch) -> list[list[str]]:
    """snapshot_download over the fake repos; returns the allow_patterns of every call."""
    calls: list[list[str]] = []

    def snapshot_download(repo_id, allow_patterns=None, **_):
        calls.append(list(allow_patterns))
        out = tmp_path / "snapshots" / repo_id.replace("/", "--")
        out.mkdir(parents=True, exist_ok=True)
        for f in fake_repos[repo_id].iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in allow_patterns):
                shutil.copyfile(f, out / f.name)
        return str(out)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    return calls


def test_code_files_only_with_trust_remote_code(fake_hub):
    plain = resolve_checkpoint_dir("org/tiny-code")
    assert not (plain / CODE_FILE).exists() and all("*.py" not in c for c in fake_hub)
    trusted = resolve_checkpoint_dir("org/tiny-code", trust_remote_code=True)
    assert (trusted / CODE_FILE).exists() and "*.py" in fake_hub[-1]
    assert all("*.bin" not in c for c in fake_hub)  # safetensors present: no pickles fetched


def _ask(capsys, model: str, image: Path, *extra: str) -> tuple[int, str, str]:
    from pulse_app.cli import main

    capsys.readouterr()
    rc = main(["ask", "Rhythm?", "--model", model, "--image", str(image), "--dtype", "float32", "--device", "cpu",
               "--max-new-tokens", "3", "--json", *extra])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "ecg.png"
    make_ecg_like_image(120, 60, seed=2).save(path)
    return path


def test_ask_with_trust_remote_code_fetches_the_code(fake_hub, image, capsys):
    rc, out, err = _ask(capsys, "org/tiny-code", image, "--trust-remote-code")
    assert rc == 0, err
    assert "*.py" in fake_hub[0] and json.loads(out.splitlines()[-1])["format"] == "hf"


def test_bin_only_repo_loads_through_weights_only(fake_hub, fake_repos, image, capsys):
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    local = resolve_checkpoint_dir("org/tiny-bin")
    assert "*.bin" in fake_hub[-1] and (local / "pytorch_model.bin").exists()
    model = AutoModelForImageTextToText.from_pretrained(local)  # what the adapter's HF path calls
    want = load_file(str(fake_repos["org/tiny-code"] / "model.safetensors"))
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items() if k in got)
    rc, out, err = _ask(capsys, "org/tiny-bin", image)
    assert rc == 0, err
    assert json.loads(out.splitlines()[-1])["tokens"]["image"] > 0


def test_bin_with_code_in_the_pickle_is_refused_with_what_to_convert(fake_hub, fake_repos, image, capsys):
    rc, _out, err = _ask(capsys, "org/tiny-evil", image)
    assert rc != 0 and "hold more than tensors and were not loaded" in err and "convert" in err and "safetensors" in err
    assert not fake_repos["marker"].exists()  # the pickle's command never ran


def test_original_format_with_bin_weights_says_what_to_convert(fake_hub):
    local = resolve_checkpoint_dir("org/tiny-original-bin")
    with pytest.raises(CheckpointFormatError, match=r"no \*\.safetensors weights .*convert .*save_file"):
        detect_format(local)
