"""One judge call over the official ``openai`` SDK, with bounded retries and a process-wide cap.

Retries are ours (tenacity), not the SDK's, so that every attempt passes the process-wide
semaphore, Retry-After is honoured exactly, attempts are counted, and every attempt reports to the
circuit breaker (:mod:`pulse_tasks.scoring.judge.breaker`), which stops calls once the judge is down.
Authentication and "model not found" errors are fatal: the caller stops judging instead of repeating them.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from pulse_tasks.scoring.judge.breaker import Breaker
from pulse_tasks.scoring.judge.settings import MAX_RETRY_AFTER_S, JudgeSettings, redact

log = logging.getLogger(__name__)

# Status codes worth another attempt: timeouts, conflicts, rate limits, server trouble.
TRANSIENT_STATUS = frozenset({408, 409, 429})
# Status codes that will fail every call the same way: wrong key, no access, unknown model/deployment.
FATAL_STATUS = frozenset({401, 403, 404})
# A 429 with this code means the account is out of credit: waiting does not help.
QUOTA_CODES = frozenset({"insufficient_quota"})

_SEMAPHORES: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_SEMAPHORES_LOCK = threading.Lock()


def process_semaphore(endpoint: str, limit: int) -> threading.BoundedSemaphore:
    """The one semaphore for ``endpoint`` in this process: caps calls in flight across all
    threads (lmms-eval's process_results pool, our batch pool, several tasks)."""
    with _SEMAPHORES_LOCK:
        sem = _SEMAPHORES.get((endpoint, limit))
        if sem is None:
            sem = _SEMAPHORES[(endpoint, limit)] = threading.BoundedSemaphore(limit)
        return sem


class JudgeCallError(RuntimeError):
    """A judge call that failed after its attempts; the message is already redacted."""

    def __init__(self, message: str, *, fatal: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.fatal = fatal
        self.status = status


class _Stopped(RuntimeError):
    """Raised inside the retry loop when the breaker opened (not transient: no further attempt)."""


@dataclass
class _Call:
    """One item's call as the breaker sees it: its id, task or batch, and whether it is the probe."""

    id: int
    scope: Hashable
    probe: bool
    attempts: int = 0
    no_more: bool = False  # the probe got no reply: no retry


@dataclass
class Reply:
    """The judge's text and what it cost."""

    text: str
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens
    attempts: int = 1


def _openai_module() -> Any:
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - openai is a base dependency
        raise ImportError("the LLM judge needs the openai SDK: pip install 'openai>=1.40'") from exc
    return openai


def make_sdk_client(settings: JudgeSettings) -> Any:
    """An OpenAI or AzureOpenAI client; SDK retries off (ours count and share the semaphore)."""
    openai = _openai_module()
    common = {"api_key": settings.api_key, "timeout": settings.timeout_s, "max_retries": 0}
    if settings.provider == "azure":
        return openai.AzureOpenAI(azure_endpoint=settings.azure_endpoint, api_version=settings.api_version, **common)
    return openai.OpenAI(base_url=settings.base_url, **common)


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None)


def _error_code(exc: BaseException) -> str | None:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("code") or inner.get("type") or "") or None
    return None


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``retry-after`` in seconds)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return max(0.0, float(raw) / divisor)
        except ValueError:
            continue  # an HTTP date: fall back to our own backoff
    return None


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: timeouts, connection errors, 408/409/429 (not quota), 5xx."""
    openai = _openai_module()
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    status = _status(exc)
    if status is None:
        return False
    if status == 429 and _error_code(exc) in QUOTA_CODES:
        return False
    if (ra := _retry_after(exc)) is not None and ra > MAX_RETRY_AFTER_S:
        return False
    return status in TRANSIENT_STATUS or status >= 500


def is_fatal(exc: BaseException) -> bool:
    """Will fail every later call too: bad key, no permission, unknown model, no quota."""
    status = _status(exc)
    return status in FATAL_STATUS or (status == 429 and _error_code(exc) in QUOTA_CODES)


def is_unreachable(exc: BaseException) -> bool:
    """No server answered (refused, DNS, reset); a timeout is not this (a slow server does answer)."""
    openai = _openai_module()
    return isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError)


def describe(exc: BaseException, settings: JudgeSettings) -> str:
    """A short, redacted description of an SDK error."""
    openai = _openai_module()
    status = _status(exc)
    head = f"HTTP {status}" if status else type(exc).__name__
    hint = ""
    if status in (401, 403):
        hint = (" (no API key was sent: set ECGBENCH_JUDGE_API_KEY to the judge server's key)"
                if settings.key_source == "none" else f" (check the judge API key from {settings.key_source} / permissions)")
    elif status == 404:
        hint = f" (model or deployment {settings.model!r} not found at {settings.host}"
        hint += ", or the base URL lacks its /v1 path)" if settings.provider == "compatible" else ")"
    elif status == 429:
        hint = (" (out of credit)" if _error_code(exc) in QUOTA_CODES
                else " (rate limited: lower --concurrency / ECGBENCH_JUDGE_CONCURRENCY)")
    elif status is not None and status >= 500:
        hint = f" (judge server error at {settings.host})"
    elif isinstance(exc, openai.APITimeoutError):
        hint = f" (no reply within {settings.timeout_s:g} s: raise --timeout / ECGBENCH_JUDGE_TIMEOUT)"
    elif status is None and is_unreachable(exc):
        hint = f" (judge at {settings.host} unreachable)"
    return redact(f"{head}: {exc}{hint}", settings.secrets())[:500]


class JudgeClient:
    """Sends chat-completion requests for one :class:`JudgeSettings`; thread-safe."""

    def __init__(self, settings: JudgeSettings) -> None:
        self.settings = settings
        self._sdk: Any = None
        self._sdk_lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self.semaphore = process_semaphore(settings.endpoint, settings.concurrency)
        self.breaker = Breaker(window_s=settings.timeout_s)
        self.http_calls = 0  # requests sent (all attempts), for accounting and tests

    @property
    def sdk(self) -> Any:
        with self._sdk_lock:
            if self._sdk is None:
                self._sdk = make_sdk_client(self.settings)
            return self._sdk

    def _wait_seconds(self, retry_state: Any) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if exc is not None and (ra := _retry_after(exc)) is not None:
            return ra
        s = self.settings
        backoff = min(s.backoff_max_s, s.backoff_base_s * 2 ** (retry_state.attempt_number - 1))
        return backoff * (0.5 + random.random() / 2)  # jitter: threads retrying together spread out

    def _create(self, messages: list[dict[str, str]], decoding: dict[str, Any], call: _Call) -> Any:
        openai = _openai_module()
        with self.semaphore:
            if (reason := self.breaker.blocked(call.probe)) is not None:
                raise _Stopped(reason)
            with self._counter_lock:
                self.http_calls += 1
            call.attempts += 1
            probe, call.probe = call.probe, False  # the probe is the call's first attempt only
            start = self.breaker.clock()
            try:
                response = self.sdk.chat.completions.create(model=self.settings.model, messages=messages, **decoding)
            except openai.APIConnectionError as exc:  # no HTTP reply at all (timeouts included)
                call.no_more = probe
                self.breaker.attempt(call.id, call.scope, start, False, probe=probe,
                                     last=probe or call.attempts >= self.settings.max_attempts,
                                     error=describe(exc, self.settings))
                raise
            except BaseException:  # an HTTP error status or an unreadable body: the server answered
                self.breaker.attempt(call.id, call.scope, start, True, probe=probe)
                raise
            self.breaker.attempt(call.id, call.scope, start, True, probe=probe)
            return response

    def _not_a_chat_api(self, detail: str) -> JudgeCallError:
        """Fatal: every later call to this URL will get the same kind of answer."""
        return JudgeCallError(redact(f"the judge at {self.settings.host} answered with a body that is not a chat "
                                     f"completion ({detail}): is the base URL an OpenAI-compatible API (ending in /v1)?",
                                     self.settings.secrets())[:500], fatal=True)

    def complete(self, messages: list[dict[str, str]], decoding: dict[str, Any], *, scope: Hashable = None,
                 probe: bool = False) -> Reply:
        """One judge reply; raises :class:`JudgeCallError` (redacted) after bounded attempts, or at
        once when the breaker is open. ``scope``: the task or batch (the breaker's unit);
        ``probe``: the first attempt is the breaker's half-open trial (no retry without a reply)."""
        import tenacity

        call = _Call(self.breaker.new_call(), scope, probe)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.settings.max_attempts),
            wait=self._wait_seconds,
            retry=tenacity.retry_if_exception(lambda exc: is_transient(exc) and not call.no_more),
            reraise=True,
            before_sleep=lambda rs: log.info("judge call attempt %d failed (%s), retrying",
                                             rs.attempt_number, describe(rs.outcome.exception(), self.settings)),
        )
        try:
            response = retrying(self._create, messages, decoding, call)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes a recorded, redacted error
            openai = _openai_module()
            if isinstance(exc, _Stopped):
                raise JudgeCallError(f"judging stopped: {exc}") from None  # the breaker opened
            if isinstance(exc, ValueError):  # JSONDecodeError included: a 2xx body that is no chat completion
                raise self._not_a_chat_api(f"{type(exc).__name__}: {exc}") from None
            if not isinstance(exc, openai.OpenAIError):
                raise JudgeCallError(redact(f"{type(exc).__name__}: {exc}", self.settings.secrets())[:500]) from None
            attempts = retrying.statistics.get("attempt_number", 1)
            raise JudgeCallError(f"{describe(exc, self.settings)} after {attempts} attempt(s)",
                                 fatal=is_fatal(exc), status=_status(exc)) from None
        attempts = retrying.statistics.get("attempt_number", 1)
        usage = {}
        if getattr(response, "usage", None) is not None:
            usage = {"prompt_tokens": int(response.usage.prompt_tokens or 0),
                     "completion_tokens": int(response.usage.completion_tokens or 0)}
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list):  # JSON, but no chat completion (a web app or another API at that URL)
            raise self._not_a_chat_api(f"no 'choices' in {str(response)[:120]!r}")
        text = choices[0].message.content if choices else None
        return Reply(text=text or "", usage=usage, attempts=attempts)
