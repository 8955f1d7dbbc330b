"""The ``pulse`` lmms-eval adapter on tiny random checkpoints (CPU, no hub)."""

from __future__ import annotations

import io

import pytest
from lmms_eval.api.instance import Instance

from pulse_models.adapter import FAILED_PREFIX, Pulse
from pulse_models.checkpoint import CheckpointFormatError
from pulse_models.conversation import build_prompt
from pulse_models.testing import make_ecg_like_image, make_tiny_hf_checkpoint, make_tiny_original_checkpoint

GEN = {"max_new_tokens": 10, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False, "until": ["</s>"]}
SIZES = [(100, 60), (40, 90), (20, 20), (64, 64), (120, 40), (50, 50)]
QUESTIONS = ["What is the rhythm?", "Report.", "Which leads show ST elevation? Answer with the letter.", "Axis?",
             "Is this normal?", "Rate?"]


def _docs(n: int = 6) -> list[dict]:
    return [{"id": f"d{i}", "image": make_ecg_like_image(*SIZES[i % len(SIZES)], seed=i),
             "questions": [QUESTIONS[i % len(QUESTIONS)], "Explain your answer."]} for i in range(n)]


def doc_to_visual(doc: dict) -> list:
    image = doc["image"]
    if isinstance(image, bytes):
        from PIL import Image

        return [Image.open(io.BytesIO(image))]  # raises for broken bytes, like a corrupt file
    return [image]


def doc_to_text(doc, lmms_eval_specific_kwargs=None, previous_output=None, round_idx=None, previous_round_info=None):
    """The multi-round contract of pulse_tasks.glue.hooks.doc_to_text (5-tuple for round >= 1)."""
    if not round_idx:
        return doc["questions"][0]
    if round_idx >= len(doc["questions"]):
        return None, None, True, previous_output, previous_round_info
    info = {"question": doc["questions"][round_idx], "round_idx": round_idx}
    return doc_to_visual(doc), "history spelled out: " + doc["questions"][round_idx], False, previous_output, info


def _requests(docs, kind="generate_until", gen=GEN):
    reqs = []
    for i, doc in enumerate(docs):
        if kind == "generate_until":
            args = (doc["questions"][0], dict(gen), doc_to_visual, i, "t", "test")
        else:
            args = (doc["questions"][0], dict(gen), doc_to_visual, doc_to_text, i, "t", "test")
        reqs.append(Instance(kind, args, idx=0, metadata={"task": "t", "doc_id": i, "repeats": 1}))
    return reqs


def _model(path, batch_size=1, **kw):
    m = Pulse.create_from_arg_string(f"pretrained={path},dtype=float32,device_map=cpu",
                                     {"batch_size": batch_size, "device": None, **kw})
    return m


@pytest.fixture(scope="module")
def original_ckpt(tmp_path_factory):
    return make_tiny_original_checkpoint(tmp_path_factory.mktemp("orig"), merge_type="spatial_unpad")


@pytest.fixture(scope="module")
def flat_ckpt(tmp_path_factory):
    return make_tiny_original_checkpoint(tmp_path_factory.mktemp("flat"), merge_type="flat", seed=1)


def _run(model, docs, kind="generate_until", gen=GEN):
    model.task_dict = {"t": {"test": docs}}
    reqs = _requests(docs, kind, gen)
    return model.generate_until(reqs) if kind == "generate_until" else model.generate_until_multi_round(reqs)


@pytest.mark.parametrize("which", ["original_ckpt", "flat_ckpt"])
def test_batch1_equals_batch4(which, request):
    path = request.getfixturevalue(which)
    docs = _docs()
    one = _run(_model(path, 1, prefetch_workers=0), docs)  # inline preparation
    four = _run(_model(path, 4), docs)
    assert one == four and len(one) == len(docs)
    assert sum(len(t) > 3 for t in one) >= 4  # real continuations, not empty strings
    assert all(isinstance(t, str) and not t.startswith(FAILED_PREFIX) for t in one)


def test_outputs_match_model_generate(flat_ckpt):
    """The adapter's text is the model's greedy continuation of the llava_v1 prompt."""
    from pulse_models.conversation import tokenize_with_image

    m = _model(flat_ckpt, 2)
    docs = _docs(2)
    texts = _run(m, docs)
    engine = m.engine
    for doc, text in zip(docs, texts):
        p = engine.image_processor.preprocess(doc["image"])
        ids = tokenize_with_image(build_prompt([("<image>\n" + doc["questions"][0], None)]), m.tokenizer)
        out = m.model.generate([ids], [p.pixel_values], [p.image_size], max_new_tokens=10, do_sample=False)
        row = out[0].tolist()
        if m.tokenizer.eos_token_id in row:
            row = row[: row.index(m.tokenizer.eos_token_id) + 1]
        assert text == m.tokenizer.decode(row, skip_special_tokens=True).strip()


def test_bad_image_and_failed_generation_do_not_stop_the_run(flat_ckpt, monkeypatch):
    m = _model(flat_ckpt, 3)
    docs = _docs(4)
    docs[1]["image"] = b"definitely not a png"
    texts = _run(m, docs)
    assert texts[1].startswith(FAILED_PREFIX) and "input error" in texts[1]
    assert all(not t.startswith(FAILED_PREFIX) for i, t in enumerate(texts) if i != 1)
    assert m.stats["failed"] == 1

    real = m.engine.generate

    def flaky(items, settings):  # fails for any batch holding the item with the tallest image
        if any(it.image_size == (40, 90) for it in items):
            raise RuntimeError("simulated CUDA error")
        return real(items, settings)

    monkeypatch.setattr(m.engine, "generate", flaky)
    texts2 = _run(m, _docs(4))
    assert texts2[1].startswith(FAILED_PREFIX) and "simulated CUDA error" in texts2[1]
    assert texts2[0] == texts[0] and texts2[2] == texts[2] and texts2[3] == texts[3]


def test_gen_kwargs_override_defaults(flat_ckpt):
    m = _model(flat_ckpt, 2, max_new_tokens=3)
    gen = {k: v for k, v in GEN.items() if k != "max_new_tokens"}
    short = _run(m, _docs(2), gen=gen)
    long = _run(m, _docs(2), gen=dict(GEN, max_new_tokens=10))
    for s, l in zip(short, long):
        assert l.startswith(s)


@pytest.mark.parametrize("mode", ["standard", "reference"])
def test_multi_round_carries_own_answer(flat_ckpt, mode):
    m = Pulse(pretrained=str(flat_ckpt), dtype="float32", device_map="cpu", batch_size=4, arena_history=mode)
    seen: list = []
    real_prepare = m.engine.prepare

    def spy(turns, image):
        seen.append(list(turns))
        return real_prepare(turns, image)

    m.engine.prepare = spy
    docs = _docs(3)
    res = _run(m, docs, kind="multi")
    assert [len(r) for r in res] == [2, 2, 2]
    first = _run(_model(flat_ckpt, 1), docs)
    assert [r[0] for r in res] == first  # round 1 equals single-turn generation
    round2 = [t for t in seen if len(t) == 2]
    assert len(round2) == 3
    for turns in round2:
        k = next(i for i, d in enumerate(docs) if d["questions"][0] == turns[0][0])
        assert turns == [(docs[k]["questions"][0], res[k][0]), ("Explain your answer.", None)]
        prompt = m.engine.prompt(turns, True)
        assert prompt == build_prompt([("<image>\n" + turns[0][0], res[k][0]), (turns[1][0], None)], history_mode=mode)
    # batch size does not change multi-round outputs
    again = _run(Pulse(pretrained=str(flat_ckpt), dtype="float32", device_map="cpu", batch_size=1,
                       arena_history=mode), docs, kind="multi")
    assert again == res


def test_truncation_is_counted(tmp_path):
    path = make_tiny_original_checkpoint(tmp_path, max_length=60)
    m = _model(path, 2)
    texts = _run(m, _docs(3))
    assert len(texts) == 3 and m.stats["truncated"] == 3 and m.stats["failed"] == 0


def test_hf_checkpoint_through_auto_classes(tmp_path):
    path = make_tiny_hf_checkpoint(tmp_path)
    one = _model(path, 1)
    assert one.format == "hf"
    docs = _docs(4)
    a = _run(one, docs)
    b = _run(_model(path, 4), docs)
    assert a == b and all(not t.startswith(FAILED_PREFIX) for t in a)
    multi = _run(_model(path, 2), docs[:2], kind="multi")
    assert [len(r) for r in multi] == [2, 2] and [r[0] for r in multi] == a[:2]
    prompt = one.engine.prompt([("Q1", "A1"), ("Q2", None)], True)
    assert prompt.count("<image>") == 1 and "A1</s>" in prompt and prompt.endswith("ASSISTANT:")


def test_unknown_format_and_bad_args(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "whisper", "architectures": ["WhisperModel"]}')
    with pytest.raises(CheckpointFormatError, match="whisper"):
        Pulse(pretrained=str(tmp_path), dtype="float32", device_map="cpu")
    with pytest.raises(ValueError):
        Pulse(pretrained=str(tmp_path), dtype="int8")
    with pytest.raises(TypeError):
        Pulse(pretrained=str(tmp_path), bogus=1)


def test_loglikelihood_not_supported(flat_ckpt):
    with pytest.raises(NotImplementedError):
        _model(flat_ckpt).loglikelihood([])


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, pulse_models; print('transformers' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_clean_frees_the_model(flat_ckpt):
    import gc
    import weakref

    m = _model(flat_ckpt)
    ref = weakref.ref(m.model)
    m.clean()
    gc.collect()
    assert ref() is None
