"""`ecgbench ask` on tiny random checkpoints of both layouts (CPU, no hub).

The command is driven through ``pulse_app.cli.main`` in process and once through the
installed console script; answers are checked against the ``pulse`` lmms-eval adapter's own
generate_until / generate_until_multi_round on the same checkpoint (one code path).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pulse_app.cli import main
from pulse_models.configuration import PulseConfig
from pulse_models.conversation import build_prompt
from pulse_models.image_processing import anyres_grid_shape, num_image_tokens
from pulse_models.testing import (
    TINY_PATCH,
    TINY_PINPOINTS,
    TINY_TILE,
    make_ecg_like_image,
    make_tiny_hf_checkpoint,
    make_tiny_original_checkpoint,
)

IMAGE_SIZE = (100, 60)  # (width, height): a 2x2 grid of tiny 32 px tiles
QUESTION = "What is the rhythm?"
FOLLOW_UP = "Explain your answer."
FAST = ["--dtype", "float32", "--device", "cpu", "--max-new-tokens", "8"]  # CPU-sized decoding
ECGBENCH = Path(sys.executable).with_name("ecgbench")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ask-ckpts")
    return {
        "original": make_tiny_original_checkpoint(root / "original", merge_type="flat", seed=1),
        "hf": make_tiny_hf_checkpoint(root / "hf"),
    }


@pytest.fixture(scope="module")
def image_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ask-img") / "ecg.png"
    make_ecg_like_image(*IMAGE_SIZE, seed=3).save(path)
    return path


def _ask(capsys, *argv: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    rc = main(["ask", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _words(text: str) -> list[str]:
    return text.split()


# ---------------------------------------------------------------- the adapter, as lmms-eval drives it


def _adapter_answers(path: Path, image_path: Path, questions: list[str], mode: str = "standard") -> list[str]:
    """The `pulse` adapter's answers for one conversation (generate_until or multi-round)."""
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from pulse_models.adapter import Pulse

    model = Pulse(pretrained=str(path), dtype="float32", device_map="cpu", max_new_tokens=8, arena_history=mode)
    model.task_dict = {"t": {"test": [{"image": Image.open(image_path).convert("RGB")}]}}
    gen = {"max_new_tokens": 8, "temperature": 0, "do_sample": False}

    def to_visual(doc):
        return [doc["image"]]

    if len(questions) == 1:
        req = Instance("generate_until", (questions[0], gen, to_visual, 0, "t", "test"), idx=0,
                       metadata={"task": "t", "doc_id": 0, "repeats": 1})
        return model.generate_until([req])

    def to_text(doc, lmms_eval_specific_kwargs=None, previous_output=None, round_idx=None, previous_round_info=None):
        if round_idx >= len(questions):
            return None, None, True, previous_output, previous_round_info
        return to_visual(doc), questions[round_idx], False, previous_output, {"question": questions[round_idx]}

    req = Instance("generate_until_multi_round", (questions[0], gen, to_visual, to_text, 0, "t", "test"), idx=0,
                   metadata={"task": "t", "doc_id": 0, "repeats": 1})
    return model.generate_until_multi_round([req])[0]


# ---------------------------------------------------------------- one-shot, streaming


@pytest.mark.parametrize("layout", ["original", "hf"])
def test_one_shot_streams_the_adapters_answer(layout, ckpts, image_path, capsys, monkeypatch):
    from transformers import TextStreamer

    streamed: list[list[int]] = []
    real_put = TextStreamer.put

    def recording_put(self, value):
        streamed.append(value.flatten().tolist())
        return real_put(self, value)

    monkeypatch.setattr(TextStreamer, "put", recording_put)
    rc, out, err = _ask(capsys, "--model", str(ckpts[layout]), "--image", str(image_path), *FAST, QUESTION)
    assert rc == 0, err
    assert len(streamed) >= 3 and all(len(ids) == 1 for ids in streamed[1:])  # prompt first, then token by token
    rc_json, out_json, _ = _ask(capsys, "--model", str(ckpts[layout]), "--image", str(image_path), *FAST,
                                "--json", QUESTION)
    (record,) = _json_lines(out_json)
    assert rc_json == 0 and record["answer"].strip() and out.strip()
    # The streamer got exactly the answer's tokens. (Printed text can differ from the final decode
    # only inside invalid UTF-8 byte runs, which random tiny models produce and real ones do not.)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ckpts[layout])
    new_ids = [t for ids in streamed[1:] for t in ids]
    assert tokenizer.decode(new_ids, skip_special_tokens=True).strip() == record["answer"]
    if "\ufffd" not in record["answer"]:
        assert out.strip() == record["answer"]
    assert [record["answer"]] == _adapter_answers(ckpts[layout], image_path, [QUESTION])


@pytest.mark.parametrize("layout,question", [("original", QUESTION), ("hf", "Rate?")])
def test_streamed_text_is_the_answer(layout, question, ckpts, image_path, capsys):
    """Inputs whose random-model answers are valid UTF-8: stdout is exactly the answer and a newline."""
    argv = ["--model", str(ckpts[layout]), "--image", str(image_path), *FAST, "--max-new-tokens", "4", question]
    rc, out, err = _ask(capsys, *argv)
    rc_json, out_json, _ = _ask(capsys, *argv, "--json")
    (record,) = _json_lines(out_json)
    assert rc == rc_json == 0, err
    assert "\ufffd" not in record["answer"] and len(record["answer"]) >= 3  # the premise of this test
    assert out.strip(" ") == record["answer"] + "\n"


def test_beam_search_prints_the_answer_whole(ckpts, image_path, capsys):
    argv = ["--model", str(ckpts["original"]), "--image", str(image_path), *FAST, "--num-beams", "2", QUESTION]
    rc, out, err = _ask(capsys, *argv)
    rc_json, out_json, _ = _ask(capsys, *argv, "--json")
    (record,) = _json_lines(out_json)
    assert rc == rc_json == 0, err
    assert out == record["answer"] + "\n" and record["generation"]["num_beams"] == 2


@pytest.mark.parametrize("layout", ["original", "hf"])
def test_engine_generate_feeds_a_streamer_the_answer_tokens(layout, ckpts, image_path):
    from PIL import Image

    from pulse_models.adapter import Pulse

    class Recorder:  # transformers' streamer protocol: put(token ids), end()
        def __init__(self):
            self.chunks, self.ended = [], False

        def put(self, value):
            self.chunks.append(value.reshape(-1).tolist())

        def end(self):
            self.ended = True

    model = Pulse(pretrained=str(ckpts[layout]), dtype="float32", device_map="cpu", max_new_tokens=6)
    processed = model.engine.process_image(Image.open(image_path).convert("RGB"))
    item = model.engine.prepare([("What is the rhythm?", None)], processed)
    recorder = Recorder()
    (out,) = model.engine.generate([item], model.defaults, streamer=recorder)
    streamed = [t for chunk in recorder.chunks[1:] for t in chunk]  # the first put is the prompt
    assert recorder.ended and streamed[: len(out.token_ids)] == list(out.token_ids)


# ---------------------------------------------------------------- --json


@pytest.mark.parametrize("layout", ["original", "hf"])
def test_json_reports_layout_grid_and_token_counts(layout, ckpts, image_path, capsys):
    rc, out, err = _ask(capsys, "--model", str(ckpts[layout]), "--image", str(image_path), *FAST, "--json", QUESTION)
    assert rc == 0, err
    (rec,) = _json_lines(out)  # one object, no streamed text around it
    cols, rows = anyres_grid_shape(IMAGE_SIZE, TINY_PINPOINTS, TINY_TILE)
    assert rec["image"]["grid"] == {"cols": cols, "rows": rows, "tiles": cols * rows, "tile_size": TINY_TILE,
                                    "resolution": [cols * TINY_TILE, rows * TINY_TILE]}
    assert (rec["image"]["width"], rec["image"]["height"]) == IMAGE_SIZE
    tokens = rec["tokens"]
    if layout == "original":
        config = PulseConfig.from_json_file(ckpts[layout] / "config.json")
        assert tokens["image"] == num_image_tokens(IMAGE_SIZE, config) == 16 * (1 + cols * rows)
        assert rec["prompt"] == build_prompt([("<image>\n" + QUESTION, None)])
        assert rec["template"] == "llava_v1" and rec["history_mode"] == "standard"
    else:  # llava_next: spatial_unpad with the tiny tiles
        expected = num_image_tokens(IMAGE_SIZE, merge_type="spatial_unpad", pinpoints=TINY_PINPOINTS, tile=TINY_TILE,
                                    patches_per_side=TINY_TILE // TINY_PATCH)
        assert tokens["image"] == expected
        assert rec["prompt"] == f"USER: <image>\n{QUESTION} ASSISTANT:" and rec["template"] == "chat_template"
    assert tokens["text"] > 0 and tokens["image"] + tokens["text"] == tokens["prompt"]
    assert tokens["truncated"] is False and tokens["max_length"] == 1024
    assert rec["generation"] == {"max_new_tokens": 8, "temperature": 0.0, "top_p": None, "num_beams": 1,
                                 "do_sample": False}
    assert rec["question"] == QUESTION and rec["format"] == ("llava_original" if layout == "original" else "hf")


def test_json_reports_truncation(tmp_path, image_path, capsys):
    short = make_tiny_original_checkpoint(tmp_path / "short", max_length=64)
    rc, out, err = _ask(capsys, "--model", str(short), "--image", str(image_path), *FAST, "--json", QUESTION)
    assert rc == 0, err
    (rec,) = _json_lines(out)
    assert rec["tokens"]["truncated"] is True and rec["tokens"]["prompt"] > rec["tokens"]["max_length"] == 64
    assert "right-truncated" in err


# ---------------------------------------------------------------- --chat


@pytest.mark.parametrize("layout,mode", [("original", "standard"), ("original", "reference"), ("hf", "standard")])
def test_chat_two_turns_carry_the_first_answer(layout, mode, ckpts, image_path, capsys, monkeypatch):
    argv = ["--model", str(ckpts[layout]), "--image", str(image_path), *FAST, "--chat", "--arena-history", mode]
    stdin = f"{FOLLOW_UP}\n\nnever asked: the empty line ended the chat\n"
    rc, out, err = _ask(capsys, *argv, "--json", QUESTION, stdin=stdin, monkeypatch=monkeypatch)
    assert rc == 0, err
    first, second = _json_lines(out)
    a1, a2 = first["answer"], second["answer"]
    assert (first["turn"], second["turn"], second["question"]) == (1, 2, FOLLOW_UP)
    assert a1 in second["prompt"] and second["prompt"].startswith(first["prompt"].rsplit("ASSISTANT:", 1)[0])
    if layout == "original":
        assert second["prompt"] == build_prompt([("<image>\n" + QUESTION, a1), (FOLLOW_UP, None)], history_mode=mode)
        assert second["tokens"]["image"] == first["tokens"]["image"]  # the image stays on the first turn
    else:
        assert second["prompt"] == f"USER: <image>\n{QUESTION} ASSISTANT: {a1}</s>USER: {FOLLOW_UP} ASSISTANT:"
    if layout == "original":  # the arena's multi-round path gives the same two answers
        assert [a1, a2] == _adapter_answers(ckpts[layout], image_path, [QUESTION, FOLLOW_UP], mode)

    # Streaming chat (stdin ended by EOF this time) prints the same two answers.
    rc, out, err = _ask(capsys, *argv, QUESTION, stdin=f"{FOLLOW_UP}\n", monkeypatch=monkeypatch)
    assert rc == 0, err
    assert len(_words(out)) == len(_words(a1)) + len(_words(a2))  # both answers streamed, nothing else
    if "\ufffd" not in a1 + a2:
        assert _words(out) == _words(a1) + _words(a2)


def test_chat_takes_the_first_question_from_stdin(ckpts, image_path, capsys, monkeypatch):
    rc, out, err = _ask(capsys, "--model", str(ckpts["original"]), "--image", str(image_path), *FAST, "--chat",
                        "--json", stdin=f"{QUESTION}\n", monkeypatch=monkeypatch)
    assert rc == 0, err
    (rec,) = _json_lines(out)
    assert rec["question"] == QUESTION


# ---------------------------------------------------------------- options reach the loader


def test_defaults_are_the_reference_settings_and_reach_the_loader(monkeypatch, tmp_path):
    """`ecgbench ask`'s options go to the loader the adapter uses (``loading.load_model``), in one
    call; its decoding is the adapter's defaults."""
    import argparse

    from pulse_models import ask, loading
    from pulse_models.engine import GenSettings

    seen: dict = {}
    monkeypatch.setattr(loading, "load_model", lambda checkpoint, **kw: seen.update(kw, checkpoint=checkpoint) or "model")
    parser = argparse.ArgumentParser()
    ask.add_arguments(parser)
    args = parser.parse_args(["--model", "m", "--image", "i.png", "q"])
    assert ask.load(args, str(tmp_path)) == "model"
    assert seen == {"checkpoint": str(tmp_path), "dtype": None, "attn_implementation": "sdpa", "device": None,
                    "device_map": None, "conv_template": "auto", "arena_history": "standard",
                    "trust_remote_code": False}
    assert ask.gen_settings(args) == GenSettings() == GenSettings(max_new_tokens=1024, temperature=0.0, top_p=None,
                                                                   num_beams=1)
    args = parser.parse_args(["--model", "m", "--image", "i.png", "--trust-remote-code", "--dtype", "bfloat16",
                              "--device-map", "cuda:1", "--attn-implementation", "eager", "--max-new-tokens", "7",
                              "--temperature", "0.5", "--top-p", "0.9", "--num-beams", "2", "q"])
    ask.load(args, str(tmp_path))
    assert seen["trust_remote_code"] is True and seen["dtype"] == "bfloat16" and seen["device_map"] == "cuda:1"
    assert seen["attn_implementation"] == "eager"
    assert ask.gen_settings(args) == GenSettings(max_new_tokens=7, temperature=0.5, top_p=0.9, num_beams=2)


def test_ask_loads_without_the_lmms_eval_adapter(ckpts, image_path, capsys, monkeypatch):
    """One question needs no lmms-eval model (nor its Accelerator): the loader alone."""
    from pulse_models import adapter

    def refuse(*args, **kwargs):
        raise AssertionError("ecgbench ask built the lmms-eval adapter")

    monkeypatch.setattr(adapter.Pulse, "__init__", refuse)
    rc, out, err = _ask(capsys, "--model", str(ckpts["original"]), "--image", str(image_path), *FAST, "--json",
                        QUESTION)
    assert rc == 0, err
    assert _json_lines(out)[0]["answer"]


# ---------------------------------------------------------------- bad input


def _bad_inputs(tmp: Path, image: Path, ckpt: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (argv after "ask", expected stderr fragment)."""
    (tmp / "notes.txt").write_text("not an image")
    (tmp / "broken.png").write_bytes(image.read_bytes()[:60])  # a PNG cut short
    junk = tmp / "junk"
    junk.mkdir(exist_ok=True)
    (junk / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp / "empty").mkdir(exist_ok=True)
    ok = ["--model", str(ckpt), "--image", str(image)]
    return {
        "missing image": (["--model", str(ckpt), "--image", str(tmp / "nope.png"), "q"], "does not exist"),
        "image is a folder": (["--model", str(ckpt), "--image", str(tmp), "q"], "is not a file"),
        "unsupported format": (["--model", str(ckpt), "--image", str(tmp / "notes.txt"), "q"], "unsupported"),
        "corrupt image": (["--model", str(ckpt), "--image", str(tmp / "broken.png"), "q"], "cannot be decoded"),
        "empty question": ([*ok, ""], "question is empty"),
        "blank question": ([*ok, "  \n "], "question is empty"),
        "no question": (ok, "question is empty"),
        "missing model": (["--model", str(tmp / "no-model"), "--image", str(image), "q"], "does not exist"),
        "folder without config": (["--model", str(tmp / "empty"), "--image", str(image), "q"], "no config.json"),
        "unknown layout": (["--model", str(junk), "--image", str(image), "q"], "unknown checkpoint format"),
        "bad max-new-tokens": ([*ok, "--max-new-tokens", "0", "q"], "--max-new-tokens"),
    }


@pytest.mark.parametrize("case", ["missing image", "image is a folder", "unsupported format", "corrupt image",
                                  "empty question", "blank question", "no question", "missing model",
                                  "folder without config", "unknown layout", "bad max-new-tokens"])
def test_bad_input_is_one_line_and_nonzero(case, tmp_path, ckpts, image_path, capsys):
    argv, fragment = _bad_inputs(tmp_path, image_path, ckpts["original"])[case]
    rc, out, err = _ask(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("ecgbench ask: error: ") and fragment in err, err


def test_chat_with_nothing_to_ask(ckpts, image_path, capsys, monkeypatch):
    rc, out, err = _ask(capsys, "--model", str(ckpts["original"]), "--image", str(image_path), "--chat",
                        stdin="", monkeypatch=monkeypatch)
    assert rc == 2 and out == "" and "question is empty" in err and err.count("\n") == 1


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_image(tmp_path, ckpts, image_path, capsys):
    locked = tmp_path / "locked.png"
    locked.write_bytes(image_path.read_bytes())
    locked.chmod(0)
    rc, _, err = _ask(capsys, "--model", str(ckpts["original"]), "--image", str(locked), "q")
    assert rc == 2 and "not readable" in err


# ---------------------------------------------------------------- the installed console script


def test_console_script_answers_and_rejects_bad_input(ckpts, image_path, tmp_path):
    assert ECGBENCH.exists(), "the project is not installed in this environment"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    done = subprocess.run([str(ECGBENCH), "ask", "--model", str(ckpts["original"]), "--image", str(image_path),
                           *FAST, "--json", QUESTION], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    rec = json.loads(done.stdout)
    assert rec["answer"] == _adapter_answers(ckpts["original"], image_path, [QUESTION])[0]

    # Every bad input, one process: one-line errors, no traceback, and torch never imported.
    cases = _bad_inputs(tmp_path, image_path, ckpts["original"])
    cases.pop("unknown layout")  # telling an unknown model_type from HF ones needs transformers' tables
    cases["hub id that cannot be fetched"] = (["--model", "no-such-org/no-such-model", "--image", str(image_path),
                                               "q"], "hub download failed")
    script = textwrap.dedent("""
        import contextlib, io, json, sys
        from pulse_app.cli import main
        results = {}
        for name, (argv, _) in json.loads(sys.argv[1]).items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = main(["ask", *argv])
            results[name] = [rc, err.getvalue()]
        print(json.dumps({"results": results, "torch": "torch" in sys.modules}))
    """)
    done = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["torch"] is False
    for name, (rc, err) in report["results"].items():
        assert rc == 2 and err.count("\n") == 1 and cases[name][1] in err and "Traceback" not in err, (name, err)
