"""Credential hygiene for everything we write: reports, HTML pages, submissions, log lines.

lmms-eval records ``--model_args`` verbatim (``model_version=gpt-4o,api_key=sk-...``); our outputs
must not republish such values. One function for every writer, so a new output cannot forget it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"  # what a credential value is replaced with (its key stays, so readers see it was set)

# A key is credential-like when one of its underscore/dash-separated words is one of these
# (api_key, hf_token, client_secret, db_password, key) but not when the word is only part of a
# longer one (tokenizer, max_tokens, keyword).
CREDENTIAL_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "pwd", "auth",
                              "authorization", "credential", "credentials"})
NON_CREDENTIAL_KEYS = frozenset({"max_tokens", "max_new_tokens", "num_tokens"})  # counts, not secrets

_ARG_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w.-]*\s*=)")  # lmms-eval's `k=v,k=v` (values may hold commas)


def is_credential_key(key: str) -> bool:
    """True for keys such as api_key, OPENAI_API_KEY, token, hf-token, client_secret, password."""
    name = key.strip().lower()
    if name in NON_CREDENTIAL_KEYS:
        return False
    words = [w for w in re.split(r"[_\-.\s]+", name) if w]
    return any(w in CREDENTIAL_WORDS for w in words) or name.endswith("apikey")


def redact_model_args(model_args: str | Mapping[str, Any] | None) -> str | dict[str, Any] | None:
    """The same model_args with credential-like values replaced by ``***`` (string or mapping in, same out)."""
    if model_args is None:
        return None
    if isinstance(model_args, Mapping):
        return {k: (REDACTED if is_credential_key(str(k)) and v not in (None, "") else v) for k, v in model_args.items()}
    parts = []
    for part in _ARG_SPLIT.split(str(model_args)):
        key, sep, value = part.partition("=")
        parts.append(f"{key}={REDACTED}" if sep and is_credential_key(key) and value.strip() else part)
    return ",".join(parts)
