"""llava_v1 template, per-chunk tokenisation and training labels (golden layouts)."""

from __future__ import annotations

import sentencepiece as spm
import pytest

from pulse_models.conversation import (
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
    SYSTEM,
    build_prompt,
    tokenize_conversation,
    tokenize_with_image,
)
from pulse_models.testing import make_tiny_tokenizer_dir

Q1 = "<image>\nWhat is the rhythm?"
Q2 = "Is there ST elevation?"
A1 = "Sinus rhythm."


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return make_tiny_tokenizer_dir(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tokenizer(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


@pytest.fixture(scope="module")
def sp(tok_dir):
    return spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))


def slow_llama_encode(sp, text: str) -> list[int]:
    """Independent re-implementation of the slow (SentencePiece) LlamaTokenizer, legacy=False, as
    LLaVA used it: BOS, "</s>" split out as a special token, text after a special token encoded
    without SentencePiece's dummy prefix (the "<unk>" trick of transformers' slow tokenizer)."""
    ids = [sp.bos_id()]
    for i, seg in enumerate(text.split("</s>")):
        if i > 0:
            ids.append(sp.eos_id())
        if not seg:
            continue
        if i == 0:
            ids += sp.encode(seg)
        else:
            n_unk = len(sp.encode("<unk>"))
            ids += sp.encode("<unk>" + seg)[n_unk:]
    return ids


def test_single_turn_prompt_golden():
    assert build_prompt([(Q1, None)]) == SYSTEM + " USER: <image>\nWhat is the rhythm? ASSISTANT:"
    assert build_prompt([(Q1, None)], history_mode="reference") == build_prompt([(Q1, None)])


def test_two_turn_prompt_golden_both_modes():
    std = build_prompt([(Q1, A1), (Q2, None)])
    assert std == SYSTEM + " USER: <image>\nWhat is the rhythm? ASSISTANT: Sinus rhythm.</s>USER: Is there ST elevation? ASSISTANT:"
    ref = build_prompt([(Q1, A1), (Q2, None)], history_mode="reference")
    assert ref == (SYSTEM + " USER: <image>\nWhat is the rhythm? ASSISTANT:ASSISTANT: Sinus rhythm. "
                   "USER: Is there ST elevation?</s>ASSISTANT:")


def test_build_prompt_rejects_bad_input():
    with pytest.raises(ValueError):
        build_prompt([])
    with pytest.raises(ValueError):
        build_prompt([(Q1, None), (Q2, None)])
    with pytest.raises(ValueError):
        build_prompt([(Q1, None)], history_mode="other")


def test_tiny_tokenizer_is_sentencepiece_only(tok_dir, tokenizer):
    assert (tok_dir / "tokenizer.model").exists() and not (tok_dir / "tokenizer.json").exists()
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 0)


@pytest.mark.parametrize("mode", ["standard", "reference"])
@pytest.mark.parametrize("n_turns", [1, 2])
def test_input_ids_layout_around_image(tokenizer, sp, mode, n_turns):
    turns = [(Q1, None)] if n_turns == 1 else [(Q1, A1), (Q2, None)]
    prompt = build_prompt(turns, history_mode=mode)
    ids = tokenize_with_image(prompt, tokenizer)
    before, after = prompt.split("<image>")
    # Golden layout: BOS, chunk 1 (own dummy prefix), -200, chunk 2 re-tokenised WITH its "▁" again.
    expected = slow_llama_encode(sp, before) + [IMAGE_TOKEN_INDEX] + slow_llama_encode(sp, after)[1:]
    assert ids == expected
    k = ids.index(IMAGE_TOKEN_INDEX)
    assert ids.count(IMAGE_TOKEN_INDEX) == 1 and ids[0] == 1
    assert tokenizer.convert_ids_to_tokens(ids[k + 1 : k + 3]) == ["▁", "<0x0A>"]
    if n_turns == 2:
        assert ids.count(2) == 1  # the one "</s>" in the prompt is the EOS id


def test_tokenize_conversation_labels_cover_answers_and_eos(tokenizer):
    conv = [
        {"from": "human", "value": "What is the rhythm?\n<image>"},  # image moved to the front
        {"from": "gpt", "value": A1},
        {"from": "human", "value": Q2},
        {"from": "gpt", "value": "No."},
    ]
    ids, labels, info = tokenize_conversation(conv, tokenizer, max_length=4096)
    assert not info["mismatch"] and not info["truncated"] and info["n_turns"] == 2
    assert ids == tokenize_with_image(build_prompt([(Q1, A1), (Q2, "No.")]), tokenizer)
    supervised = [i for i, x in enumerate(labels) if x != IGNORE_INDEX]
    assert all(labels[i] == ids[i] for i in supervised)
    text = tokenizer.decode([ids[i] for i in supervised])
    assert text.replace(" ", "") == (A1 + "</s>" + "No." + "</s>").replace(" ", "")
    assert labels[ids.index(IMAGE_TOKEN_INDEX)] == IGNORE_INDEX
    assert ids[-1] == 2 and labels[-1] == 2


def test_tokenize_conversation_mismatch_flag(tokenizer):
    conv = [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "x ASSISTANT: y"}]
    _, labels, info = tokenize_conversation(conv, tokenizer, max_length=4096)
    assert info["mismatch"] and all(x == IGNORE_INDEX for x in labels)


def test_tokenize_conversation_truncation(tokenizer):
    conv = [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "long answer " * 20}]
    ids, labels, info = tokenize_conversation(conv, tokenizer, max_length=50)
    assert info["truncated"] and len(ids) == len(labels) == 50 and info["total_len"] > 50


def test_llava_v1_chat_template_renders_build_prompt():
    """The chat template vLLM applies (pulse_models.vllm_model) renders build_prompt's standard
    layout: BOS, system, the image line, earlier answers stripped, the generation prompt."""
    from jinja2 import Template

    from pulse_models.conversation import SYSTEM, build_prompt, llava_v1_chat_template

    template = Template(llava_v1_chat_template())
    turns = [("<image>\nWhat is the rhythm?", "Sinus rhythm."), ("And the rate? It's 'fast'", None)]
    messages = [{"role": "user", "content": turns[0][0]}, {"role": "assistant", "content": " Sinus rhythm.\n"},
                {"role": "user", "content": turns[1][0]}]
    rendered = template.render(messages=messages, bos_token="<s>", add_generation_prompt=True)
    assert rendered == "<s>" + build_prompt(turns)
    one = template.render(messages=messages[:1], bos_token="<s>", add_generation_prompt=True)
    assert one == "<s>" + build_prompt([(turns[0][0], None)])
    own = template.render(messages=[{"role": "system", "content": "Be brief."}, *messages[:1]], bos_token="",
                          add_generation_prompt=True)
    assert own == build_prompt([(turns[0][0], None)], system="Be brief.") and SYSTEM not in own
