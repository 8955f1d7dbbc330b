"""Judge settings: which server, which model, how fast, how much; read from the environment.

Three kinds of endpoint are supported, picked in this order:

1. any OpenAI-compatible server (vLLM, SGLang, a proxy): ``ECGBENCH_JUDGE_BASE_URL`` (or
   ``OPENAI_BASE_URL``). A separate judge host gets ``ECGBENCH_JUDGE_API_KEY`` or no key (servers
   started without ``--api-key`` accept any), never the user's ``OPENAI_API_KEY``: that key goes
   only to the endpoint it belongs to (``OPENAI_BASE_URL`` when set, else api.openai.com);
2. Azure OpenAI: ``AZURE_OPENAI_ENDPOINT`` + ``AZURE_OPENAI_API_KEY`` + ``OPENAI_API_VERSION``;
   ``ECGBENCH_JUDGE_MODEL`` names the deployment;
3. OpenAI: ``OPENAI_API_KEY``.

The API key lives only in memory: it is excluded from ``repr``, identities, cache keys and
records, and :func:`redact` scrubs it from any error text.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

Provider = Literal["openai", "azure", "compatible"]

# A pinned snapshot, not the moving "gpt-4o" alias the paper used: scores stay comparable over time.
DEFAULT_MODEL = "gpt-4o-2024-08-06"
# Azure needs an explicit API version; this is the GA version that supports json_object output.
DEFAULT_AZURE_API_VERSION = "2024-10-21"
# 16 calls in flight: ~80 items/s at 200 ms latency, well inside GPT-4o tier-1 rate limits.
DEFAULT_CONCURRENCY = 16
# A judge reply is a few hundred tokens; 60 s covers a slow provider without hanging a run.
DEFAULT_TIMEOUT_S = 60.0
# Transport attempts per call (429, 5xx, timeouts, connection errors) before the item fails.
DEFAULT_MAX_ATTEMPTS = 6
# Extra calls when the reply is not valid JSON with all scores in 0-10 (temperature 0 rarely recovers more).
DEFAULT_INVALID_RETRIES = 2
# Exponential backoff (s) between transport attempts when the server sends no Retry-After.
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_MAX_S = 30.0
# Retry-After is honoured up to this many seconds; longer waits fail the attempt instead of stalling.
MAX_RETRY_AFTER_S = 120.0
# The longest judge reply we expect (three criteria with short explanations).
DEFAULT_MAX_TOKENS = 1024
# vLLM and friends started without --api-key accept any bearer token; the SDK insists on one.
PLACEHOLDER_KEY = "EMPTY"
# Where the user's OPENAI_API_KEY belongs when OPENAI_BASE_URL is unset.
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Every environment variable settings_from_env reads (tests and the demo clear exactly these).
ENV_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "OPENAI_API_VERSION",
            "ECGBENCH_JUDGE_MODEL", "ECGBENCH_JUDGE_BASE_URL", "ECGBENCH_JUDGE_API_KEY", "ECGBENCH_JUDGE_CONCURRENCY",
            "ECGBENCH_JUDGE_TIMEOUT", "ECGBENCH_JUDGE_MAX_CALLS", "ECGBENCH_JUDGE_CACHE", "ECGBENCH_JUDGE_MAX_ATTEMPTS")
# Values of ECGBENCH_JUDGE_CACHE that turn the cache off.
CACHE_OFF_VALUES = frozenset({"", "0", "off", "none", "false", "no"})


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/ecgbench/judge_cache.sqlite`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ecgbench" / "judge_cache.sqlite"


class JudgeNotConfiguredError(RuntimeError):
    """No judge endpoint or key is configured (raised by :func:`check_configured`)."""


@dataclass(frozen=True)
class JudgeSettings:
    """Everything that decides where judge calls go and how they are made."""

    provider: Provider | None = None  # None: nothing configured
    model: str = DEFAULT_MODEL  # model name, or the Azure deployment name
    base_url: str | None = None  # OpenAI/compatible base URL (None: api.openai.com)
    azure_endpoint: str | None = None  # https://NAME.openai.azure.com
    api_version: str | None = None  # Azure only
    api_key: str | None = field(default=None, repr=False, compare=True)  # never written anywhere
    key_source: str = "none"  # which variable the key came from (logged once; never the key itself)
    timeout_s: float = DEFAULT_TIMEOUT_S  # per HTTP request
    concurrency: int = DEFAULT_CONCURRENCY  # calls in flight, process-wide
    max_calls: int | None = None  # budget: items sent to the API per run (None: unlimited)
    cache_path: Path | None = None  # SQLite file; None: no cache
    prompt_file: Path | None = None  # replaces the built-in rubric text
    temperature: float = 0.0  # deterministic judging, as in the paper
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    invalid_retries: int = DEFAULT_INVALID_RETRIES
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S

    @property
    def configured(self) -> bool:
        return self.provider is not None

    @property
    def endpoint(self) -> str:
        """The URL calls go to (for identity and semaphores; carries no credentials)."""
        if self.provider == "azure":
            return self.azure_endpoint or ""
        return self.base_url or "https://api.openai.com/v1"

    @property
    def host(self) -> str:
        """Host (and port) of the endpoint, without user info, path or query."""
        parts = urlsplit(self.endpoint)
        host = parts.hostname or ""
        return f"{host}:{parts.port}" if parts.port else host

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never leave memory."""
        return tuple(s for s in (self.api_key,) if s and s != PLACEHOLDER_KEY)


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() if value and value.strip() else None


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def settings_from_env(**overrides: Any) -> JudgeSettings:
    """Build :class:`JudgeSettings` from the environment; keyword ``overrides`` win.

    Overrides use the field names of JudgeSettings (``model``, ``base_url``, ``api_key``,
    ``concurrency``, ``timeout_s``, ``max_calls``, ``cache_path``, ``prompt_file``, ...); ``None``
    values are ignored so CLI options can be passed straight through. Raises ValueError for
    malformed numbers.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(JudgeSettings)}
    if unknown:
        raise TypeError(f"unknown judge setting(s): {', '.join(sorted(unknown))}")

    values: dict[str, Any] = {"model": _env("ECGBENCH_JUDGE_MODEL") or DEFAULT_MODEL}
    base_url = overrides.get("base_url") or _env("ECGBENCH_JUDGE_BASE_URL") or _env("OPENAI_BASE_URL")
    azure_endpoint = overrides.get("azure_endpoint") or _env("AZURE_OPENAI_ENDPOINT")
    key = overrides.get("api_key")
    if base_url:
        base_url = base_url.rstrip("/")
        key, source = compatible_key(base_url, key)
        values.update(provider="compatible", base_url=base_url, api_key=key or PLACEHOLDER_KEY, key_source=source)
    elif azure_endpoint:
        values.update(provider="azure", azure_endpoint=azure_endpoint.rstrip("/"),
                      api_key=key or _env("AZURE_OPENAI_API_KEY"),
                      key_source="api_key argument" if key else "AZURE_OPENAI_API_KEY",
                      api_version=overrides.get("api_version") or _env("OPENAI_API_VERSION") or DEFAULT_AZURE_API_VERSION)
    else:
        source = "api_key argument" if key else "OPENAI_API_KEY"
        key = key or _env("OPENAI_API_KEY")
        values.update(provider="openai" if key else None, api_key=key, key_source=source if key else "none")
    if overrides.get("provider") == "azure" and not azure_endpoint:
        values["provider"] = "azure"  # check_configured explains what is missing

    if (raw := _env("ECGBENCH_JUDGE_CONCURRENCY")) is not None:
        values["concurrency"] = _positive_int("ECGBENCH_JUDGE_CONCURRENCY", raw)
    if (raw := _env("ECGBENCH_JUDGE_TIMEOUT")) is not None:
        values["timeout_s"] = _positive_float("ECGBENCH_JUDGE_TIMEOUT", raw)
    if (raw := _env("ECGBENCH_JUDGE_MAX_ATTEMPTS")) is not None:
        values["max_attempts"] = _positive_int("ECGBENCH_JUDGE_MAX_ATTEMPTS", raw)
    if (raw := _env("ECGBENCH_JUDGE_MAX_CALLS")) is not None:
        values["max_calls"] = _positive_int("ECGBENCH_JUDGE_MAX_CALLS", raw)
    raw_cache = os.environ.get("ECGBENCH_JUDGE_CACHE")
    if raw_cache is None:
        values["cache_path"] = default_cache_path()
    elif raw_cache.strip().lower() not in CACHE_OFF_VALUES:
        values["cache_path"] = Path(raw_cache.strip()).expanduser()

    for name in ("base_url", "azure_endpoint", "api_key", "api_version", "key_source"):
        overrides.pop(name, None)  # already resolved above
    values.update(overrides)
    for name in ("cache_path", "prompt_file"):
        if values.get(name) is not None:
            values[name] = Path(values[name]).expanduser()
    settings = JudgeSettings(**values)
    if settings.concurrency < 1:
        raise ValueError(f"judge concurrency must be >= 1, got {settings.concurrency}")
    if settings.max_calls is not None and settings.max_calls < 0:
        raise ValueError(f"max_judge_calls must be >= 0, got {settings.max_calls}")
    return settings


def _same_endpoint(a: str, b: str) -> bool:
    """Scheme, host and port agree (a path such as /v1 does not make another server)."""
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def compatible_key(base_url: str, explicit: str | None, own_var: str = "ECGBENCH_JUDGE_API_KEY"
                   ) -> tuple[str | None, str]:
    """(key, where it came from) for an OpenAI-compatible server at ``base_url``: ``explicit``, else
    the ``own_var`` variable (the judge's, or ``ecgbench ask``'s), else OPENAI_API_KEY where it belongs.

    The user's OPENAI_API_KEY belongs to OPENAI_BASE_URL (else api.openai.com): a server at any
    other host never sees it, so pointing the judge at a colleague's vLLM server hands over no key.
    """
    if explicit:
        return explicit, "api_key argument"
    if (own_key := _env(own_var)) is not None:
        return own_key, own_var
    openai_key = _env("OPENAI_API_KEY")
    if openai_key and _same_endpoint(base_url, _env("OPENAI_BASE_URL") or OPENAI_DEFAULT_BASE_URL):
        return openai_key, "OPENAI_API_KEY"
    return None, "none"


def key_notice(settings: JudgeSettings) -> str:
    """One line saying which key the judge sends where (no secret in it)."""
    if settings.key_source == "none":
        held_back = " (OPENAI_API_KEY is not sent to a separate judge host)" if _env("OPENAI_API_KEY") else ""
        return f"judge at {settings.host}: no API key sent; set ECGBENCH_JUDGE_API_KEY if it needs one{held_back}"
    return f"judge at {settings.host}: API key from {settings.key_source}"


HOW_TO_CONFIGURE = (
    "Set OPENAI_API_KEY (OpenAI), or AZURE_OPENAI_ENDPOINT + AZURE_OPENAI_API_KEY + OPENAI_API_VERSION "
    "(Azure; ECGBENCH_JUDGE_MODEL = deployment name), or ECGBENCH_JUDGE_BASE_URL for an "
    "OpenAI-compatible server such as vLLM (ECGBENCH_JUDGE_MODEL = served model name; its key in "
    "ECGBENCH_JUDGE_API_KEY). Or set ECGBENCH_SKIP_JUDGE_CHECK=1 to generate now and judge the samples "
    "file later with `ecgbench judge` (not --predict_only: lmms-eval 0.7.3 crashes with it on ecgbench_arena)."
)


def check_configured(settings: JudgeSettings) -> None:
    """Raise :class:`JudgeNotConfiguredError` naming what to set when no judge can be called.

    Makes no network call: run it at task load, before hours of inference.
    """
    if settings.provider is None:
        raise JudgeNotConfiguredError(f"no LLM judge is configured for ECGBench report/arena scoring. {HOW_TO_CONFIGURE}")
    if settings.provider == "azure":
        missing = [name for name, v in (("AZURE_OPENAI_ENDPOINT", settings.azure_endpoint),
                                        ("AZURE_OPENAI_API_KEY", settings.api_key)) if not v]
        if missing:
            raise JudgeNotConfiguredError(f"Azure OpenAI judge is missing {', '.join(missing)}. {HOW_TO_CONFIGURE}")
    if settings.provider == "openai" and not settings.api_key:
        raise JudgeNotConfiguredError(f"OpenAI judge needs OPENAI_API_KEY. {HOW_TO_CONFIGURE}")
    if not settings.model:
        raise JudgeNotConfiguredError("ECGBENCH_JUDGE_MODEL is empty: name the judge model (or Azure deployment).")
    if settings.prompt_file is not None and not settings.prompt_file.is_file():
        raise JudgeNotConfiguredError(f"judge prompt file not found: {settings.prompt_file}")


# Things that look like credentials even when they are not this run's key (e.g. echoed by a proxy).
_SECRET_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-*]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-~+/=*]{8,}"),
    re.compile(r"(?i)(api[-_]?key[\"'=:\s]+)[A-Za-z0-9._\-*]{8,}"),
)
REDACTED = "[REDACTED]"


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove the given secrets and anything key-shaped from ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text
