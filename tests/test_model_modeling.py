"""PulseLlavaForCausalLM and the original-format checkpoint on tiny random checkpoints (CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from pulse_models.checkpoint import (
    CheckpointFormatError,
    module_to_original_key,
    original_to_module_key,
    save_original_format,
)
from pulse_models.conversation import IGNORE_INDEX, IMAGE_TOKEN_INDEX, build_prompt, tokenize_conversation, tokenize_with_image
from pulse_models.loading import detect_format, load_pulse
from pulse_models.testing import make_ecg_like_image, make_tiny_hf_checkpoint, make_tiny_original_checkpoint

SIZES = [(100, 60), (40, 90), (20, 20), (64, 64)]  # landscape, portrait, tiny, square (tiny 32 px tiles)


@pytest.fixture(scope="module", params=["flat", "spatial_unpad"])
def tiny(request, tmp_path_factory):
    path = make_tiny_original_checkpoint(tmp_path_factory.mktemp(request.param), merge_type=request.param)
    model, tok, ip, cfg = load_pulse(path, dtype="float32", device="cpu")
    return path, model, tok, ip, cfg


def _inputs(tok, ip, questions, sizes):
    ids, pix, szs = [], [], []
    for q, s in zip(questions, sizes):
        ids.append(tokenize_with_image(build_prompt([("<image>\n" + q, None)]), tok))
        p = ip.preprocess(make_ecg_like_image(*s, seed=s[0]))
        pix.append(p.pixel_values)
        szs.append(p.image_size)
    return ids, pix, szs


def test_detect_and_load(tiny):
    path, model, tok, ip, cfg = tiny
    assert detect_format(path) == "llava_original"
    assert (path / "tokenizer.model").exists() and not (path / "tokenizer.json").exists()  # as PULSE-7B
    assert not model.training and model.dtype == torch.float32
    assert not any(p.is_meta for p in model.parameters())
    if cfg.mm_patch_merge_type == "flat":
        # PULSE-7B ships model.image_newline although it merges flat: reported unused, not fatal.
        assert model.load_report.unused == ["model.image_newline"] and model.image_newline is None
    else:
        assert model.load_report.unused == [] and model.image_newline is not None


def test_weight_names_are_original(tiny):
    path, model, *_ = tiny
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
    for expected in ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight",
                     "model.norm.weight", "lm_head.weight", "model.mm_projector.0.weight", "model.mm_projector.2.bias",
                     "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight",
                     "model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight",
                     "model.vision_tower.vision_tower.vision_model.post_layernorm.weight", "model.image_newline"]:
        assert expected in names
    for name in names:
        key = original_to_module_key(name)
        if name != "model.image_newline" or model.image_newline is not None:
            assert module_to_original_key(key) == name


@pytest.mark.parametrize("size", SIZES)
def test_merged_length_equals_image_token_count(tiny, size):
    _, model, tok, ip, cfg = tiny
    ids, pix, szs = _inputs(tok, ip, ["What is the rhythm?"], [size])
    merged = model.prepare_inputs_embeds(ids, pix, szs, padding_side="left")
    assert merged.lengths[0] == len(ids[0]) - 1 + ip.num_image_tokens(size)
    assert merged.inputs_embeds.shape == (1, merged.lengths[0], cfg.hidden_size)
    k = ids[0].index(IMAGE_TOKEN_INDEX)
    feats = model.image_features(pix, szs)[0]
    assert torch.equal(merged.inputs_embeds[0, k : k + feats.shape[0]], feats)


def test_generate_batch1_equals_batch4(tiny):
    _, model, tok, ip, _ = tiny
    qs = ["What is the rhythm?", "Report.", "Which leads show ST elevation? Answer with the letter.", "Axis?"]
    ids, pix, szs = _inputs(tok, ip, qs, SIZES)
    kw = dict(max_new_tokens=12, do_sample=False, num_beams=1)
    singles = [model.generate([i], [p], [s], **kw)[0].tolist() for i, p, s in zip(ids, pix, szs)]
    batch = model.generate(ids, pix, szs, **kw)
    eos = tok.eos_token_id
    for single, row in zip(singles, batch.tolist()):
        row = row[: len(single)]
        assert row == single, (row, single)
        assert eos not in single[:-1]


def test_forward_loss_labels_and_backward(tiny):
    _, model, tok, ip, _ = tiny
    conv = [{"from": "human", "value": "<image>\nWhat is the rhythm?"}, {"from": "gpt", "value": "Sinus rhythm."}]
    ids, labels, info = tokenize_conversation(conv, tok, max_length=4096)
    assert not info["mismatch"]
    p = ip.preprocess(make_ecg_like_image(100, 60))
    pad = 3
    input_ids = torch.tensor([ids + [0] * pad, ids[:-2] + [0] * (pad + 2)])
    lab = torch.tensor([labels + [IGNORE_INDEX] * pad, labels[:-2] + [IGNORE_INDEX] * (pad + 2)])
    mask = (torch.arange(input_ids.shape[1])[None] < torch.tensor([[len(ids)], [len(ids) - 2]])).long()
    model.train()
    model.gradient_checkpointing_enable()
    try:
        out = model(input_ids, [p.pixel_values] * 2, [p.image_size] * 2, attention_mask=mask, labels=lab)
        assert torch.isfinite(out.loss) and out.n_truncated == 0
        n_img = ip.num_image_tokens(p.image_size)
        k = ids.index(IMAGE_TOKEN_INDEX)
        assert (out.labels[0, k : k + n_img] == IGNORE_INDEX).all()
        assert (out.labels != IGNORE_INDEX).sum() == sum(x != IGNORE_INDEX for x in labels) * 2 - 2
        out.loss.backward()
        assert model.language_model.model.embed_tokens.weight.grad is not None
        assert model.mm_projector[0].weight.grad is not None
        assert all(p.grad is None for p in model.vision_tower.parameters())  # frozen tower
    finally:
        model.gradient_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        model.eval()


def test_truncation_is_reported(tmp_path):
    path = make_tiny_original_checkpoint(tmp_path, max_length=60)
    model, tok, ip, cfg = load_pulse(path, dtype="float32", device="cpu")
    ids, pix, szs = _inputs(tok, ip, ["What is the rhythm?"], [(100, 60)])
    merged = model.prepare_inputs_embeds(ids, pix, szs)
    assert merged.truncated == [True] and merged.lengths[0] > 60 and merged.inputs_embeds.shape[1] == 60
    out = model(ids, pix, szs)
    assert out.n_truncated == 1 and out.logits.shape[1] == 60


def test_save_load_roundtrip(tiny, tmp_path):
    path, model, tok, ip, cfg = tiny
    out = save_original_format(model, tok, tmp_path / "re", max_shard_bytes=20_000)  # force shards
    assert (out / "model.safetensors.index.json").exists() and (out / "tokenizer.model").exists()
    assert json.loads((out / "config.json").read_text())["mm_patch_merge_type"] == cfg.mm_patch_merge_type
    again, tok2, _, cfg2 = load_pulse(out, dtype="float32", device="cpu")
    sd1, sd2 = model.state_dict(), again.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert tok2("USER: hi").input_ids == tok("USER: hi").input_ids
    assert cfg2.to_original_dict() == cfg.to_original_dict()


def test_load_float16_and_bfloat16(tiny):
    path = tiny[0]
    for dt in ("float16", "bfloat16"):
        m, *_ = load_pulse(path, dtype=dt, device="cpu")
        assert m.dtype == getattr(torch, dt) and next(m.vision_tower.parameters()).dtype == getattr(torch, dt)


def test_detect_format_errors(tmp_path):
    with pytest.raises(CheckpointFormatError, match="does not exist"):
        detect_format(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "weights.bin").write_text("x")
    with pytest.raises(CheckpointFormatError, match="no config.json.*weights.bin"):
        detect_format(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(CheckpointFormatError, match="'bert'.*BertModel"):
        detect_format(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps({"model_type": "llava_llama", "mm_vision_tower": "x"}))
    with pytest.raises(CheckpointFormatError, match="safetensors"):
        detect_format(tmp_path / "a")


def test_hf_checkpoint(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = make_tiny_hf_checkpoint(tmp_path)
    assert detect_format(path) == "hf"
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    proc = AutoProcessor.from_pretrained(path)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the rhythm?"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    assert text.endswith("ASSISTANT:") and "<image>" in text
    inputs = proc(images=[make_ecg_like_image(100, 60)], text=[text], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert inputs["input_ids"].shape[1] < out.shape[1] <= inputs["input_ids"].shape[1] + 4
    with pytest.raises(CheckpointFormatError, match="hf"):
        load_pulse(path, dtype="float32", device="cpu")


def test_vision_tower_from_mm_vision_tower_when_absent(tiny, tmp_path):
    """A checkpoint without CLIP weights takes the tower from mm_vision_tower (here a local dir)."""
    path, model, tok, ip, cfg = tiny
    tower_dir = tmp_path / "clip"
    model.vision_tower.save_pretrained(tower_dir)
    slim = tmp_path / "slim"
    save_original_format(model, tok, slim)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(slim / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("model.vision_tower.")},
              str(slim / "model.safetensors"), metadata={"format": "pt"})
    conf = json.loads((slim / "config.json").read_text())
    conf["mm_vision_tower"] = str(tower_dir)
    (slim / "config.json").write_text(json.dumps(conf))
    again, *_ = load_pulse(slim, dtype="float32", device="cpu")
    assert again.load_report.vision_tower_from == str(tower_dir)
    ids, pix, szs = _inputs(tok, ip, ["What is the rhythm?"], [(100, 60)])
    with torch.no_grad():
        torch.testing.assert_close(again(ids, pix, szs).logits, model(ids, pix, szs).logits)


def test_extra_left_padding_does_not_change_greedy_output(tiny):
    """pad_to_multiple_of (used with static caches) only adds masked positions."""
    _, model, tok, ip, _ = tiny
    ids, pix, szs = _inputs(tok, ip, ["What is the rhythm?", "Axis?"], [(100, 60), (40, 90)])
    kw = dict(max_new_tokens=8, do_sample=False)
    plain = model.generate(ids, pix, szs, **kw)
    padded, merged = model.generate(ids, pix, szs, pad_to_multiple_of=64, return_merged=True, **kw)
    assert merged.inputs_embeds.shape[1] % 64 == 0
    assert torch.equal(plain, padded)


def test_selective_checkpointing_recomputes_only_every_nth_layer_and_keeps_the_gradients():
    """every=2 re-computes layers 0 and 2 of 4 in the backward pass (their attention runs twice),
    and loss and gradients equal the run without checkpointing."""
    from pulse_models.modeling import PulseLlavaForCausalLM
    from pulse_models.testing import tiny_config

    cfg = tiny_config("flat")
    cfg.text_config["num_hidden_layers"] = 4
    torch.manual_seed(0)
    model = PulseLlavaForCausalLM(cfg).train()
    ids = torch.randint(3, 300, (2, 12))
    calls = [0] * 4
    for i, layer in enumerate(model.language_model.model.layers):
        layer.self_attn.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = model(ids, labels=ids).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.language_model.parameters() if p.grad is not None]

    plain_loss, plain_grads = loss_and_grads()
    assert calls == [1, 1, 1, 1]
    model.gradient_checkpointing_enable(every=2)
    assert model.checkpointed_layers == [0, 2]
    calls[:] = [0] * 4
    loss, grads = loss_and_grads()
    assert calls == [2, 1, 2, 1]  # forward, then the re-computation of the checkpointed layers
    assert torch.allclose(loss, plain_loss) and all(torch.allclose(a, b) for a, b in zip(grads, plain_grads))
    model.gradient_checkpointing_enable()
    assert model.checkpointed_layers == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="every=0"):
        model.gradient_checkpointing_enable(every=0)
    model.gradient_checkpointing_disable()
    assert model.checkpointed_layers == []


@pytest.mark.parametrize("select", [-2, -1, 0, 1, 2])
def test_select_layer_features_equal_the_hidden_state_they_stand_for(select):
    """CLIP runs only the layers the selected hidden state needs; the features are the very
    tensor LLaVA's hidden_states[mm_vision_select_layer] gives, and the tower is left whole."""
    from pulse_models.modeling import PulseLlavaForCausalLM
    from pulse_models.testing import TINY_TILE, tiny_config

    cfg = tiny_config("flat")
    cfg.mm_vision_select_layer = select
    torch.manual_seed(0)
    model = PulseLlavaForCausalLM(cfg).eval()
    pixels = torch.randn(3, 3, TINY_TILE, TINY_TILE)
    layers = list(model.vision_tower.encoder.layers)
    with torch.no_grad():
        want = model.vision_tower(pixels, output_hidden_states=True).hidden_states[select]
        got = model._select_layer_features(pixels)
    assert torch.equal(got, want)
    assert list(model.vision_tower.encoder.layers) == layers
    with pytest.raises(Exception):  # a failing forward still restores every layer
        model._select_layer_features(torch.randn(1, 5, TINY_TILE, TINY_TILE))
    assert list(model.vision_tower.encoder.layers) == layers


def test_supervised_logits_give_the_full_loss_and_gradients(tiny):
    """logits="supervised" (the recipe's) applies the LM head only where a supervised token is
    predicted; loss and every gradient equal the all-positions forward's, padding and images included."""
    _, model, tok, ip, _ = tiny
    convs = [[{"from": "human", "value": "<image>\nWhat is the rhythm?"}, {"from": "gpt", "value": "Sinus rhythm."}],
             [{"from": "human", "value": "<image>\nRate?"}, {"from": "gpt", "value": "About 75 beats per minute."},
              {"from": "human", "value": "Axis?"}, {"from": "gpt", "value": "Normal."}]]
    rows = [tokenize_conversation(c, tok, max_length=4096)[:2] for c in convs]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [IGNORE_INDEX] * (width - len(lab)) for _, lab in rows])
    mask = (torch.arange(width)[None] < torch.tensor([[len(ids)] for ids, _ in rows])).long()
    images = [ip.preprocess(make_ecg_like_image(100, 60)), ip.preprocess(make_ecg_like_image(40, 90))]
    args = (input_ids, [p.pixel_values for p in images], [p.image_size for p in images])
    model.train()
    model.gradient_checkpointing_enable()
    try:
        results = {}
        for mode in ("all", "supervised"):
            model.zero_grad(set_to_none=True)
            out = model(*args, attention_mask=mask, labels=labels, logits=mode)
            out.loss.backward()
            results[mode] = (out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        full, sup = results["all"][0], results["supervised"][0]
        n_supervised = int((full.labels[:, 1:] != IGNORE_INDEX).any(0).sum())
        assert sup.logits.shape == (2, n_supervised, full.logits.shape[-1]) and n_supervised < full.logits.shape[1] / 3
        torch.testing.assert_close(sup.logits, full.logits[:, sup.logit_positions])
        torch.testing.assert_close(sup.loss, full.loss)
        assert results["all"][1].keys() == results["supervised"][1].keys()
        for name, grad in results["all"][1].items():
            torch.testing.assert_close(results["supervised"][1][name], grad, msg=name)
    finally:
        model.gradient_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        model.eval()
    with pytest.raises(ValueError, match="logits must be"):
        model(*args, attention_mask=mask, labels=labels, logits="some")
