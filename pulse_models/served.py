"""A model served at an OpenAI-compatible URL, for `ecgbench ask` and ECGBench Studio's Ask tab.

    vllm serve PULSE-ECG/PULSE-7B --max-model-len 4096          # the project's vLLM plugin
    ecgbench ask --api-base http://HOST:8000/v1 --api-model PULSE-ECG/PULSE-7B --image ecg.png "Rhythm?"

Every turn is one chat-completions request over the ``openai`` SDK (lazy-imported): the first user
message carries the ECG as a base64 PNG data URL in an ``image_url`` part before the question text,
later turns are plain text, and the earlier answers go back as assistant messages. The prompt
layout is the server's (vLLM applies the plugin's llava_v1 chat template); decoding is the
command's (greedy by default). No retries: a person is waiting and one line says what to do.

The message layout is the one ``pulse_models.vllm_offline`` sends vLLM in `make test-vllm` (greedy
outputs checked equal to `--model pulse`'s), so the server sees the prompts that test pins.

The API key follows the judge's rule (``pulse_tasks.scoring.judge.settings.compatible_key``): the
ECGBENCH_ASK_API_KEY variable, else OPENAI_API_KEY only when the URL is the one that key belongs
to (OPENAI_BASE_URL, else api.openai.com), else a placeholder (vLLM without ``--api-key`` accepts
any). The key stays in memory: never printed, and scrubbed from every error text.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

KEY_VAR = "ECGBENCH_ASK_API_KEY"  # the served model's key (OPENAI_API_KEY only where it belongs)
DEFAULT_TIMEOUT_S = 600.0  # a 1024-token report from a busy 7B server; the connect fails fast anyway


class ServedError(RuntimeError):
    """A failed request, as one redacted line that says what to do."""


@dataclass
class Reply:
    """One answer and the server's token counts (None when it sends no usage)."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def image_data_url(path_or_image: Any) -> str:
    """An image (PIL, path or bytes) as a base64 PNG data URL (lossless: vLLM decodes the same
    pixels the pulse adapter reads)."""
    from pulse_models.image_processing import load_image

    buf = io.BytesIO()
    load_image(path_or_image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_messages(turns: Sequence[Sequence[Any]], image_url: str | None) -> list[dict[str, Any]]:
    """[(question, answer), ..., (question, None)] -> chat messages: the image (a data URL, or none)
    before the first question, each answer after its question; the last turn is the one to answer."""
    messages: list[dict[str, Any]] = []
    for i, (question, answer) in enumerate(turns):
        content: list[dict[str, Any]] = []
        if i == 0 and image_url is not None:
            content.append({"type": "image_url", "image_url": {"url": image_url}})
        content.append({"type": "text", "text": question})
        messages.append({"role": "user", "content": content})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
    return messages


@dataclass
class ServedModel:
    """The model ``model`` at ``base_url`` (an OpenAI-compatible API, ending in /v1)."""

    base_url: str
    model: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    api_key: str | None = field(default=None, repr=False)
    key_source: str = "none"
    _sdk: Any = field(default=None, repr=False)

    @classmethod
    def from_env(cls, base_url: str, model: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> ServedModel:
        from pulse_tasks.scoring.judge.settings import compatible_key

        base_url = base_url.rstrip("/")
        key, source = compatible_key(base_url, None, KEY_VAR)
        return cls(base_url, model, timeout_s, key, source)

    @property
    def host(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.hostname or ''}:{parts.port}" if parts.port else (parts.hostname or "")

    @property
    def url(self) -> str:
        """The base URL as shown in messages and records: without user info (``user:pass@``) or query."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{self.host}{parts.path}"

    @property
    def format(self) -> str:
        return "served"

    def describe(self) -> str:
        return f"`{self.model}` served at {self.url}"

    @property
    def sdk(self) -> Any:
        if self._sdk is None:
            from pulse_tasks.scoring.judge.settings import PLACEHOLDER_KEY

            try:
                import openai
            except ImportError as exc:  # pragma: no cover - openai is a base dependency
                raise ServedError("a served model needs the openai SDK: pip install 'openai>=1.40'") from exc
            self._sdk = openai.OpenAI(base_url=self.base_url, api_key=self.api_key or PLACEHOLDER_KEY,
                                      timeout=self.timeout_s, max_retries=0)
        return self._sdk

    def _request(self, turns: list[tuple[str, str | None]], image_url: str, max_tokens: int, temperature: float,
                 top_p: float | None) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.model, "messages": chat_messages(turns, image_url),
                                   "max_tokens": int(max_tokens), "temperature": float(temperature)}
        if top_p is not None:
            request["top_p"] = float(top_p)
        return request

    def answer(self, turns: list[tuple[str, str | None]], image_url: str, max_tokens: int, temperature: float = 0.0,
               top_p: float | None = None) -> Reply:
        """The answer to the last turn, whole."""
        try:
            response = self.sdk.chat.completions.create(**self._request(turns, image_url, max_tokens, temperature, top_p))
            choices = getattr(response, "choices", None)
            if not isinstance(choices, list) or not choices:
                raise ValueError(f"no 'choices' in {str(response)[:120]!r}")
            text = choices[0].message.content or ""
        except Exception as exc:  # noqa: BLE001 - every failure becomes one redacted line
            raise self.error(exc) from None
        usage = getattr(response, "usage", None)
        return Reply(text, getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None))

    def stream(self, turns: list[tuple[str, str | None]], image_url: str, max_tokens: int, temperature: float = 0.0,
               top_p: float | None = None, reply: Reply | None = None) -> Iterator[str]:
        """The answer to the last turn, piece by piece as the server sends it (``stream=True``);
        ``reply`` gets the whole text and, where the server sends them, the token counts."""
        reply = reply if reply is not None else Reply("")
        try:
            chunks = self.sdk.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                      **self._request(turns, image_url, max_tokens, temperature, top_p))
            seen = 0
            for chunk in chunks:
                seen += 1
                choices = getattr(chunk, "choices", None)
                if not isinstance(choices, list):
                    raise TypeError(f"no 'choices' in {str(chunk)[:120]!r}")
                if (usage := getattr(chunk, "usage", None)) is not None:
                    reply.prompt_tokens = getattr(usage, "prompt_tokens", None)
                    reply.completion_tokens = getattr(usage, "completion_tokens", None)
                if choices and (piece := getattr(choices[0].delta, "content", None)):
                    reply.text += piece
                    yield piece
            if not seen:  # a body that is no event stream (JSON or a web page) parses as no chunk at all
                raise TypeError("the reply carried no chat-completion chunk")
        except ServedError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc) from None

    def error(self, exc: BaseException) -> ServedError:
        """One redacted line saying what failed and what to do."""
        import openai

        from pulse_tasks.scoring.judge.settings import PLACEHOLDER_KEY, redact

        status = getattr(exc, "status_code", None)
        where = f"the model server at {self.url}"
        if isinstance(exc, openai.APITimeoutError):
            text = f"{where} sent no reply within {self.timeout_s:g} s: is it overloaded? Try again or lower --max-new-tokens"
        elif isinstance(exc, openai.APIConnectionError):
            text = (f"cannot reach {where} ({type(exc).__name__}): start it (`vllm serve CHECKPOINT`) or fix "
                    "--api-base (scheme, host, port, ending in /v1)")
        elif status in (401, 403):
            text = (f"{where} refused the request (HTTP {status}): "
                    + (f"set {KEY_VAR} to its API key" if self.key_source == "none"
                       else f"check the API key from {self.key_source}"))
        elif status == 404:
            text = (f"{where} answered HTTP 404: is --api-model {self.model!r} the name it serves "
                    "(GET /v1/models lists them), and does --api-base end in /v1?")
        elif status is not None:
            text = f"{where} answered HTTP {status}: {exc}"
        elif isinstance(exc, (ValueError, TypeError, AttributeError)):  # a 2xx body that is no chat completion
            text = (f"{where} answered with something that is not a chat completion ({type(exc).__name__}): "
                    "is --api-base an OpenAI-compatible API (ending in /v1)?")
        else:
            text = f"request to {where} failed: {type(exc).__name__}: {exc}"
        secrets = tuple(s for s in (self.api_key,) if s and s != PLACEHOLDER_KEY)
        return ServedError(redact(" ".join(text.split()), secrets)[:500])
