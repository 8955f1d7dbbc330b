"""`ecgbench ask`: ask a model about one ECG image, from the command line.

    ecgbench ask --model PULSE-ECG/PULSE-7B --image ecg.png "What is the rhythm?"
    ecgbench ask --model DIR --image ecg.png --chat "What is the rhythm?" < more_questions.txt
    ecgbench ask --model DIR --image ecg.png --json "Axis?"
    ecgbench ask --api-base http://HOST:8000/v1 --api-model PULSE-ECG/PULSE-7B --image ecg.png "Rhythm?"

One code path with `lmms-eval --model pulse`: the model is loaded by the loader the adapter uses
(``pulse_models.loading.load_model``: dtype/device defaults, original-format vs HF loading, chat
template choice) and every turn goes through its engine (``engine.prepare`` builds the llava_v1
or chat-template prompt exactly as the arena's multi-round path does; ``engine.generate`` decodes
with the same ``GenSettings``). This module adds only the terminal plumbing: input checks, token
streaming, the stdin chat loop and the ``--json`` description.

With ``--api-base`` the model is one served at an OpenAI-compatible URL (`vllm serve CHECKPOINT`
with the project's vLLM plugin): each turn is a chat-completions request (``pulse_models.served``),
the prompt template is the server's, the image goes as a PNG data URL with the first question.

Bad input (image, question, model path) is checked before torch/transformers are imported and
reported as one line on stderr with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

# The loader's option names (pulse_models.loading imports neither torch nor transformers).
from pulse_models.loading import ATTN_IMPLEMENTATIONS, CONV_TEMPLATES, DTYPES, HISTORY_MODES

# Exit statuses: 2 for bad input (argparse's own usage status), 1 for a failure while running.
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
# The reference decoding (greedy, 1024 new tokens, one beam): pulse_models.engine.GenSettings' defaults.
DEFAULT_MAX_NEW_TOKENS = 1024
DEFAULT_TEMPERATURE = 0.0
DEFAULT_NUM_BEAMS = 1


class AskError(Exception):
    """Bad input or a failed run, reported as one line (no traceback)."""

    def __init__(self, message: str, status: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.status = status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `ecgbench ask` (model options as `--model pulse`'s model_args)."""
    parser.add_argument("question", nargs="?", default=None,
                        help="the question (with --chat it may be omitted: the first line of stdin is used)")
    parser.add_argument("--model", default=None, metavar="PATH_OR_HUB_ID",
                        help="checkpoint directory (original LLaVA/PULSE format or HF image-text-to-text) or hub id, "
                             "loaded in this process; or give --api-base and --api-model")
    parser.add_argument("--image", required=True, metavar="FILE", help="the ECG image (any format Pillow reads)")
    mode = parser.add_argument_group("mode")
    mode.add_argument("--chat", action="store_true",
                      help="multi-turn on the same image: further questions from stdin, one per line, "
                           "until EOF or an empty line")
    mode.add_argument("--json", action="store_true",
                      help="print prompt layout, image grid, token counts and answer as one JSON object per "
                           "turn (no streaming; a served model: the server's token counts and the answer)")
    add_served_arguments(parser)
    model = parser.add_argument_group("model (as lmms-eval --model pulse)")
    model.add_argument("--dtype", choices=DTYPES, default=None,
                       help="default: float16 for the original format, auto for HF models")
    model.add_argument("--device-map", default=None, help="one device, e.g. cuda:0 or cpu (default: cuda if present)")
    model.add_argument("--device", default=None, help="same as --device-map")
    model.add_argument("--attn-implementation", default="sdpa", choices=ATTN_IMPLEMENTATIONS)
    model.add_argument("--conv-template", default="auto", choices=CONV_TEMPLATES,
                       help="auto: llava_v1 for the original format, the processor's chat template otherwise; "
                            "vicuna_v1 (original format): LLaVA-1.5's eval template")
    model.add_argument("--arena-history", default="standard", choices=HISTORY_MODES,
                       help="llava_v1 multi-turn layout: standard, or reference (PULSE's arena script layout)")
    model.add_argument("--trust-remote-code", action="store_true",
                       help="allow custom model code (HF models; a hub id then also fetches the repo's *.py files)")
    model.add_argument("--verbose", action="store_true", help="keep transformers' warnings and progress bars")
    gen = parser.add_argument_group("generation (default: the reference protocol, greedy)")
    gen.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    gen.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="0 = greedy")
    gen.add_argument("--top-p", type=float, default=None, help="nucleus sampling (with --temperature > 0)")
    gen.add_argument("--num-beams", type=int, default=DEFAULT_NUM_BEAMS,
                     help="beam search width (answers are printed whole: beams cannot stream)")


def add_served_arguments(parser: argparse.ArgumentParser) -> None:
    """--api-base/--api-model/--api-timeout (`ecgbench ask` and `ecgbench studio`)."""
    from pulse_models.served import DEFAULT_TIMEOUT_S, KEY_VAR

    served = parser.add_argument_group(
        "served model (instead of --model: an OpenAI-compatible server such as `vllm serve CHECKPOINT`)",
        f"API key: ${KEY_VAR}, else $OPENAI_API_KEY only when the URL is OpenAI's own ($OPENAI_BASE_URL, else "
        "api.openai.com); none otherwise. The server applies its own chat template (vLLM: the plugin's llava_v1); "
        "the in-process model options below do not apply.")
    served.add_argument("--api-base", default=None, metavar="URL", help="the server's base URL, e.g. http://HOST:8000/v1")
    served.add_argument("--api-model", default=None, metavar="NAME",
                        help="the model name the server serves (vLLM: the checkpoint given to `vllm serve`, "
                             "or its --served-model-name)")
    served.add_argument("--api-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"seconds to wait for one reply (default {DEFAULT_TIMEOUT_S:g})")


def check_served(args: argparse.Namespace) -> bool:
    """Whether the model is a served one; AskError for a missing or contradictory model choice."""
    if args.api_base is None and args.api_model is None:
        if not getattr(args, "model", None):
            raise AskError("give --model (a checkpoint) or --api-base and --api-model (a served model)")
        return False
    if getattr(args, "model", None):
        raise AskError("give either --model (loaded here) or --api-base/--api-model (a served model), not both")
    if not args.api_base or not args.api_model:
        raise AskError("a served model needs both --api-base URL and --api-model NAME")
    if urlsplit(args.api_base).scheme not in ("http", "https") or not urlsplit(args.api_base).hostname:
        raise AskError(f"--api-base {args.api_base!r} is not an http(s) URL (e.g. http://localhost:8000/v1)")
    if not args.api_timeout > 0:
        raise AskError("--api-timeout must be positive")
    return True


# ---------------------------------------------------------------- validation (no torch)


def check_image(path: str) -> Any:
    """The image as a PIL RGB image; AskError for a missing, unreadable or unsupported file."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    if not p.exists():
        raise AskError(f"image {path} does not exist")
    if not p.is_file():
        raise AskError(f"image {path} is not a file")
    if not os.access(p, os.R_OK):
        raise AskError(f"image {path} is not readable (permission denied)")
    try:
        with Image.open(p) as img:
            img.load()
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise AskError(f"image {path}: unsupported or unrecognised image format") from None
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt files raise OSError, SyntaxError, ValueError...
        raise AskError(f"image {path} cannot be decoded: {_one_line(exc)}") from None


def check_question(question: str | None) -> str:
    text = (question or "").strip()
    if not text:
        raise AskError("the question is empty")
    return text


def check_settings(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise AskError("--max-new-tokens must be at least 1")
    if args.temperature < 0:
        raise AskError("--temperature must be >= 0")
    if args.num_beams < 1:
        raise AskError("--num-beams must be at least 1")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise AskError("--top-p must be in (0, 1]")
    if args.device and args.device_map and args.device != args.device_map:
        raise AskError("--device and --device-map disagree; give one")


def _quiet_transformers() -> None:
    """Only errors and no progress bars from transformers: stderr stays readable next to the answer."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ---------------------------------------------------------------- model (the adapter's loader)


def load(args: argparse.Namespace, model: str) -> Any:
    """``model`` (a checkpoint folder or hub id) as `--model pulse --model_args ...` loads it: one
    call of the adapter's loader (``pulse_models.loading.load_model`` -> LoadedModel). AskError:
    exit status 2 when ``model`` is no checkpoint (nothing loaded, no torch imported for a wrong
    path), 1 when a checkpoint fails to load (weights, tokenizer, config)."""
    from pulse_models.loading import NotACheckpoint, load_model

    try:
        return load_model(model, dtype=args.dtype, attn_implementation=args.attn_implementation,
                          device=args.device, device_map=args.device_map, conv_template=args.conv_template,
                          arena_history=args.arena_history, trust_remote_code=args.trust_remote_code)
    except NotACheckpoint as exc:
        raise AskError(f"model {model}: {_one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - weights/tokenizer/config problems: one line, no traceback
        raise AskError(f"cannot load model {model}: {type(exc).__name__}: {_one_line(exc)}", EXIT_FAILED) from None


def gen_settings(args: argparse.Namespace) -> Any:
    """The command line's decoding (``pulse_models.engine.GenSettings``), as the adapter's defaults."""
    from pulse_models.engine import GenSettings

    return GenSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                       num_beams=args.num_beams)


@dataclass
class Turn:
    """One answered question with what --json reports about it."""

    question: str
    answer: str
    prompt: str  # the rendered prompt (llava_v1 layout or chat template), "<image>" where the image goes
    image_tokens: int  # embeddings spliced for the image
    text_tokens: int  # prompt tokens other than the image
    prompt_tokens: int  # merged length before truncation
    truncated: bool  # the merged prompt was right-truncated to the model's max length
    answer_tokens: int


def answer(model: Any, turns: list[tuple[str, str | None]], processed: Any, stream: bool, settings: Any,
           streamer: Any = None) -> Turn:
    """Answer the last turn of ``turns`` about the image (``engine.process_image`` output, reused
    across turns as the adapter's multi-round loop does) with the loaded model's engine (``load``).

    ``settings``: a ``GenSettings`` (`ecgbench ask`: ``gen_settings(args)``); ``streamer``:
    a transformers streamer to feed instead of printing (ECGBench Studio streams into the page)."""
    engine = model.engine
    item = engine.prepare(turns, processed)  # the adapter's prompt building (arena multi-turn included)
    if streamer is not None and settings.num_beams == 1:
        out = engine.generate([item], settings, streamer=streamer)[0]
    elif stream and settings.num_beams == 1:
        from transformers import TextStreamer

        streamer = TextStreamer(model.tokenizer, skip_prompt=True, skip_special_tokens=True)
        out = engine.generate([item], settings, streamer=streamer)[0]
    else:
        out = engine.generate([item], settings)[0]
        if stream:  # beam search cannot stream: the answer is printed whole
            print(out.text, flush=True)
    prompt = item.extra["text"] if "text" in item.extra else engine.prompt(turns, True)
    image_tokens, text_tokens = _token_split(model, item, out)
    if out.truncated:
        print(f"ecgbench ask: warning: prompt right-truncated ({out.n_prompt_tokens} merged tokens > "
              f"{model.max_length})", file=sys.stderr)
    return Turn(turns[-1][0], out.text, prompt, image_tokens, text_tokens, out.n_prompt_tokens, bool(out.truncated),
                len(out.token_ids))


def _token_split(model: Any, item: Any, out: Any) -> tuple[int, int]:
    """(image tokens, text tokens) of the prompt the model actually saw (before truncation)."""
    from pulse_models.conversation import IMAGE_TOKEN_INDEX

    if item.input_ids:  # original format: the model spliced n_prompt - text tokens for the image
        text = sum(1 for t in item.input_ids if t != IMAGE_TOKEN_INDEX)
        return out.n_prompt_tokens - text, text
    # HF: the processor expands the image placeholder into one id per image embedding.
    ids = model.engine.processor_inputs([item])["input_ids"][0].tolist()
    image_id = getattr(model.config, "image_token_id", None)
    if image_id is None:
        image_id = getattr(model.config, "image_token_index", None)
    n_image = sum(1 for t in ids if t == image_id) if image_id is not None else 0
    return n_image, len(ids) - n_image


def describe_image(model: Any, image: Any, path: str) -> dict[str, Any]:
    """Size and anyres grid of the image as the model's image processing cuts it."""
    from pulse_models.image_processing import anyres_grid_shape, select_best_resolution

    info: dict[str, Any] = {"path": path, "width": image.size[0], "height": image.size[1], "grid": None}
    cfg = model.config
    if model.format == "llava_original":
        if cfg.image_aspect_ratio == "anyres":
            pinpoints, tile = cfg.grid_pinpoints_wh, cfg.tile_size
        else:
            return info
    else:
        hf_pinpoints = getattr(cfg, "image_grid_pinpoints", None)
        vision = getattr(cfg, "vision_config", None)
        tile = getattr(vision, "image_size", None)
        if not hf_pinpoints or not tile:
            return info
        pinpoints = [(int(w), int(h)) for h, w in hf_pinpoints]  # HF stores (height, width)
    cols, rows = anyres_grid_shape(image.size, pinpoints, tile)
    info["grid"] = {"cols": cols, "rows": rows, "tiles": cols * rows, "tile_size": tile,
                    "resolution": list(select_best_resolution(image.size, pinpoints))}
    return info


def turn_record(model: Any, args: argparse.Namespace, image_info: dict, index: int, turn: Turn,
                settings: Any) -> dict[str, Any]:
    """The --json object of one turn (``settings``: the GenSettings it was answered with)."""
    template = model.engine.conv_template if model.format == "llava_original" else (
        "chat_template" if getattr(model.engine.processor, "chat_template", None) else "llava_v1")
    s = settings
    return {
        "model": args.model,
        "format": model.format,
        "template": template,
        "history_mode": args.arena_history if template in ("llava_v1", "vicuna_v1") else None,
        "turn": index,
        "question": turn.question,
        "prompt": turn.prompt,
        "image": image_info,
        "tokens": {"image": turn.image_tokens, "text": turn.text_tokens, "prompt": turn.prompt_tokens,
                   "max_length": model.max_length, "truncated": turn.truncated, "answer": turn.answer_tokens},
        "generation": {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p,
                       "num_beams": s.num_beams, "do_sample": s.temperature > 0},
        "answer": turn.answer,
    }


# ---------------------------------------------------------------- the command


def _questions(first: str | None, chat: bool, stdin: TextIO) -> Any:
    """The first question, then (with --chat) stdin lines until EOF or an empty line."""
    if first is not None or not chat:
        yield check_question(first)
    elif (line := _read(stdin)) is not None:
        yield check_question(line)
    else:
        raise AskError("the question is empty (none given and stdin is empty)")
    if not chat:
        return
    while (line := _read(stdin)) is not None:
        yield line


def _read(stdin: TextIO) -> str | None:
    if stdin.isatty():
        print("> ", end="", file=sys.stderr, flush=True)
    line = stdin.readline()
    if not line or not line.strip():
        return None
    return line.strip()


def run(args: argparse.Namespace) -> int:
    """Entry of `ecgbench ask`; one-line errors on stderr, exit 2 for bad input, 1 for failures."""
    try:
        return _run(args)
    except AskError as exc:
        print(f"ecgbench ask: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    # Cheap checks first: no torch/transformers before the input is known to be usable.
    if args.question is not None or not args.chat:  # --chat may take its first question from stdin
        check_question(args.question)
    check_settings(args)
    if check_served(args):
        if args.num_beams != 1:
            raise AskError("--num-beams needs a model loaded here (--model): a served model decodes greedily or samples")
        return _run_served(args, check_image(args.image))
    image = check_image(args.image)
    if not args.verbose:
        _quiet_transformers()
    model = load(args, args.model)
    image_info = describe_image(model, image, args.image) if args.json else {}
    decoding = gen_settings(args)
    try:
        processed = model.engine.process_image(image)
    except Exception as exc:  # noqa: BLE001
        raise AskError(f"image {args.image} cannot be processed: {_one_line(exc)}") from None
    turns: list[tuple[str, str | None]] = []
    for index, question in enumerate(_questions(args.question, args.chat, sys.stdin), start=1):
        turns.append((question, None))
        try:
            turn = answer(model, turns, processed, not args.json, decoding)
        except Exception as exc:  # noqa: BLE001
            raise AskError(f"generation failed: {type(exc).__name__}: {_one_line(exc)}", EXIT_FAILED) from None
        turns[-1] = (question, turn.answer)
        if args.json:
            print(json.dumps(turn_record(model, args, image_info, index, turn, decoding), ensure_ascii=False), flush=True)
    return 0


def _run_served(args: argparse.Namespace, image: Any) -> int:
    """The turns of `ecgbench ask --api-base`: one chat-completions request each, streamed unless --json."""
    from pulse_models.served import Reply, ServedError, ServedModel, image_data_url

    model = ServedModel.from_env(args.api_base, args.api_model, args.api_timeout)
    url = image_data_url(image)
    turns: list[tuple[str, str | None]] = []
    for index, question in enumerate(_questions(args.question, args.chat, sys.stdin), start=1):
        turns.append((question, None))
        try:
            if args.json:
                reply = model.answer(turns, url, args.max_new_tokens, args.temperature, args.top_p)
            else:
                reply = Reply("")
                for piece in model.stream(turns, url, args.max_new_tokens, args.temperature, args.top_p, reply):
                    print(piece, end="", flush=True)
                print(flush=True)
        except ServedError as exc:
            raise AskError(str(exc), EXIT_FAILED) from None
        turns[-1] = (question, reply.text)
        if args.json:
            print(json.dumps(served_record(model, args, image, index, question, reply), ensure_ascii=False), flush=True)
    return 0


def served_record(model: Any, args: argparse.Namespace, image: Any, index: int, question: str, reply: Any,
                  image_name: str | None = None) -> dict[str, Any]:
    """The --json object of one turn of a served model: what the client knows (the prompt layout
    and image grid are the server's; token counts are its usage numbers)."""
    return {
        "model": model.model,
        "format": "served",
        "api_base": model.url,
        "template": "server",
        "turn": index,
        "question": question,
        "image": {"path": image_name or args.image, "width": image.size[0], "height": image.size[1]},
        "tokens": {"prompt": reply.prompt_tokens, "answer": reply.completion_tokens},
        "generation": {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                       "num_beams": 1, "do_sample": args.temperature > 0},
        "answer": reply.text,
    }
