"""The LLaVA ``llava_v1`` conversation template and its tokenisation, as the original code did it.

Layout (SeparatorStyle.TWO, sep " ", sep2 "</s>"):

    SYSTEM + " " + "USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:"

Tokenisation splits the prompt at ``<image>``, tokenises each chunk on its own (BOS kept only on
the first chunk, so the chunk after the image starts with SentencePiece's "▁" again) and puts
IMAGE_TOKEN_INDEX (-200) where the image embeddings go.

Public API (stable, used by training/ and the adapter):
    SYSTEM, VICUNA_V1_SYSTEM, SYSTEMS, ROLES, SEP, SEP2, IMAGE_TOKEN, IMAGE_TOKEN_INDEX, IGNORE_INDEX   template constants
    build_prompt(turns, history_mode="standard"|"reference", system=SYSTEM) -> str
    tokenize_with_image(prompt, tokenizer) -> list[int]
    llava_v1_chat_template(system=SYSTEM) -> str   build_prompt's standard layout as a Jinja chat template
    tokenize_conversation(conversations, tokenizer, max_length=...) -> (input_ids, labels, info)
    TokenizeInfo   the info dict's keys (mismatch flag, lengths, truncated)

``tokenizer`` is any object with ``__call__(text).input_ids`` and ``bos_token_id`` (a transformers
tokenizer). No torch import here.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence, TypedDict

SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
# LLaVA's conv_vicuna_v1 (the conv_mode LLaVA-1.5's own eval scripts pass): llava_v1's layout,
# separators and roles, with "user" where llava_v1's system prompt says "human".
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
# conv_mode name -> system prompt, for the templates of the SeparatorStyle.TWO family.
SYSTEMS = {"llava_v1": SYSTEM, "vicuna_v1": VICUNA_V1_SYSTEM}
ROLES = ("USER", "ASSISTANT")
SEP = " "  # closes the system prompt and every user turn
SEP2 = "</s>"  # closes every assistant turn (the Llama EOS string)
IMAGE_TOKEN = "<image>"
# Placeholder id where image embeddings are spliced (LLaVA's constant; never a vocabulary id).
IMAGE_TOKEN_INDEX = -200
# Label value ignored by the cross-entropy loss (PyTorch's default ignore_index).
IGNORE_INDEX = -100
TEMPLATE_NAME = "llava_v1"

HistoryMode = Literal["standard", "reference"]


def build_prompt(turns: Sequence[tuple[str, str | None]], *, history_mode: HistoryMode = "standard",
                 system: str = SYSTEM) -> str:
    """Render ``[(user, assistant or None), ...]`` with the llava_v1 template (``system``:
    VICUNA_V1_SYSTEM for vicuna_v1, the same layout otherwise).

    The last turn's assistant text is normally None (generation prompt "ASSISTANT:"). The first
    user text should start with "<image>\\n" for an image conversation.

    history_mode "reference" reproduces the second-turn layout PULSE's arena script produced
    (an empty assistant placeholder left after turn 1, answer and next question joined by " ",
    "</s>" before the final "ASSISTANT:"), e.g. for two turns::

        SYSTEM USER: <image>\\nQ1 ASSISTANT:ASSISTANT: A1 USER: Q2</s>ASSISTANT:

    Single-turn prompts are identical in both modes.
    """
    if not turns:
        raise ValueError("build_prompt needs at least one turn")
    if history_mode not in ("standard", "reference"):
        raise ValueError(f"history_mode must be 'standard' or 'reference', not {history_mode!r}")
    messages: list[tuple[str, str | None]] = []
    for i, (user, assistant) in enumerate(turns):
        messages.append((ROLES[0], user))
        if assistant is None and i != len(turns) - 1:
            raise ValueError("only the last turn may lack an assistant answer")
        messages.append((ROLES[1], assistant))
    if history_mode == "reference" and len(turns) > 1:
        return _reference_prompt(turns, system)
    return _render(messages, system)


def _render(messages: Sequence[tuple[str, str | None]], system: str = SYSTEM) -> str:
    """LLaVA Conversation.get_prompt for SeparatorStyle.TWO."""
    seps = (SEP, SEP2)
    ret = system + seps[0]
    for i, (role, message) in enumerate(messages):
        if message:
            ret += role + ": " + message + seps[i % 2]
        else:
            ret += role + ":"
    return ret


def _reference_prompt(turns: Sequence[tuple[str, str | None]], system: str = SYSTEM) -> str:
    """The arena script's message list: the first turn's empty ASSISTANT placeholder was kept and
    the answer appended as a new ASSISTANT message, so every later message sits one slot off in
    the template's alternating separators (" " after even, "</s>" after odd slots)."""
    messages: list[tuple[str, str | None]] = [(ROLES[0], turns[0][0]), (ROLES[1], None)]
    for i, (_, assistant) in enumerate(turns[:-1]):
        messages.append((ROLES[1], assistant))
        messages.append((ROLES[0], turns[i + 1][0]))
    messages.append((ROLES[1], turns[-1][1]))
    return _render(messages, system)


def tokenize_with_image(prompt: str, tokenizer: Any) -> list[int]:
    """LLaVA's tokenizer_image_token: per-chunk tokenisation around ``<image>``, -200 between."""
    chunks = [list(tokenizer(chunk).input_ids) for chunk in prompt.split(IMAGE_TOKEN)]
    input_ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(chunks[0][0])
    for i, chunk in enumerate(chunks):
        if i > 0:
            input_ids.append(IMAGE_TOKEN_INDEX)
        input_ids.extend(chunk[offset:])
    return input_ids


class TokenizeInfo(TypedDict):
    mismatch: bool  # the template's own round count disagreed with the token count: labels all -100
    counted_len: int  # tokens the round-by-round count covered
    total_len: int  # tokens in input_ids (before truncation)
    truncated: bool  # input_ids were cut to max_length (text tokens only; image expansion comes later)
    n_turns: int


def _normalise_image_turn(value: str) -> str:
    """LLaVA's preprocess_multimodal: move "<image>" to the front, followed by a newline."""
    if IMAGE_TOKEN in value:
        value = value.replace(IMAGE_TOKEN, "").strip()
        value = (IMAGE_TOKEN + "\n" + value).strip()
    return value


def tokenize_conversation(
    conversations: Sequence[dict[str, str]], tokenizer: Any, *, max_length: int
) -> tuple[list[int], list[int], TokenizeInfo]:
    """Tokenise a LLaVA training record's ``conversations`` ([{from: human|gpt, value}]).

    Returns ``input_ids`` (with IMAGE_TOKEN_INDEX for the image), ``labels`` (IGNORE_INDEX except
    each assistant answer and its closing "</s>") and an info dict. This is LLaVA's preprocess_v1:
    if its round-by-round count disagrees with the tokenised length, every label is IGNORE_INDEX
    and ``info["mismatch"]`` is True (the trainer counts and skips such samples).
    ``max_length`` right-truncates the text tokens (the model truncates again after the image
    expands to its real token count).
    """
    role_of = {"human": ROLES[0], "gpt": ROLES[1]}
    source = list(conversations)
    if source and role_of.get(source[0]["from"]) != ROLES[0]:
        source = source[1:]  # LLaVA drops a leading non-human turn
    messages: list[tuple[str, str | None]] = []
    for j, sentence in enumerate(source):
        role = role_of.get(sentence["from"])
        if role != ROLES[j % 2]:
            raise ValueError(f"turn {j} is from {sentence['from']!r}; expected alternating human/gpt")
        messages.append((role, _normalise_image_turn(sentence["value"])))
    prompt = _render(messages)
    input_ids = tokenize_with_image(prompt, tokenizer)
    labels = list(input_ids)
    total_len = len(input_ids)

    # LLaVA's round count: each "</s>"-closed round = instruction (ignored) + answer (supervised).
    sep = SEP + ROLES[1] + ": "
    legacy = bool(getattr(tokenizer, "legacy", True))
    cur_len = 1  # BOS
    labels[:cur_len] = [IGNORE_INDEX] * cur_len
    for i, rou in enumerate(prompt.split(SEP2)):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(tokenize_with_image(rou, tokenizer))
        instruction_len = len(tokenize_with_image(parts[0], tokenizer)) - 2
        if i != 0 and not legacy:
            # Without legacy prefixing, the token after "</s>" has no "▁" that a standalone round gets.
            round_len -= 1
            instruction_len -= 1
        end = min(cur_len + instruction_len, total_len)
        labels[cur_len:end] = [IGNORE_INDEX] * (end - cur_len)
        cur_len += round_len
    labels[cur_len:] = [IGNORE_INDEX] * max(0, total_len - cur_len)
    mismatch = cur_len != total_len
    if mismatch:
        labels = [IGNORE_INDEX] * total_len
    truncated = total_len > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    info: TokenizeInfo = {
        "mismatch": mismatch,
        "counted_len": cur_len,
        "total_len": total_len,
        "truncated": truncated,
        "n_turns": len(messages) // 2,
    }
    return input_ids, labels, info


def llava_v1_chat_template(system: str = SYSTEM) -> str:
    """``build_prompt``'s standard layout as a Jinja chat template (vLLM applies it to chat
    messages; a leading system message replaces ``system``). Content is a string: vLLM puts
    ``<image>\\n`` in front of the text of a message with an image, as ``first_user_text`` does.
    The BOS string stands for the tokenizer's BOS (pulse_models.vllm_model.image_prompt_ids).
    Earlier answers are stripped, as the ``pulse`` adapter keeps them: vLLM's answer text keeps
    the space of its first SentencePiece piece ("▁c" -> " c"), which would otherwise double the
    one after "ASSISTANT:" in the next turn's prompt."""
    def lit(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    user, assistant = ROLES
    return (
        "{%- set ns = namespace(system=" + lit(system) + ", start=0) -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set ns.system = messages[0]['content'] -%}{%- set ns.start = 1 -%}{%- endif -%}"
        "{{- bos_token + ns.system + " + lit(SEP) + " -}}"
        "{%- for m in messages[ns.start:] -%}"
        "{%- if m['role'] == 'user' -%}"
        "{%- if m['content'] -%}{{- " + lit(user + ": ") + " + m['content'] + " + lit(SEP) + " -}}"
        "{%- else -%}{{- " + lit(user + ":") + " -}}{%- endif -%}"
        "{%- elif m['role'] == 'assistant' -%}"
        "{%- if m['content'] | trim -%}{{- " + lit(assistant + ": ") + " + (m['content'] | trim) + " + lit(SEP2) + " -}}"
        "{%- else -%}{{- " + lit(assistant + ":") + " -}}{%- endif -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- " + lit(assistant + ":") + " -}}{%- endif -%}"
    )
