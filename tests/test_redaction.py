"""Credential-like model_args values never reach what we write."""

from __future__ import annotations

import pytest

from pulse_tasks.redaction import REDACTED, is_credential_key, redact_model_args


@pytest.mark.parametrize("key", ["api_key", "OPENAI_API_KEY", "key", "token", "hf_token", "hf-token", "client_secret",
                                 "password", "azure_openai_api_key", "apikey", "auth"])
def test_credential_keys(key):
    assert is_credential_key(key)


@pytest.mark.parametrize("key", ["pretrained", "tokenizer", "max_tokens", "max_new_tokens", "keyword", "model_version",
                                 "device_map", "monkey"])
def test_ordinary_keys(key):
    assert not is_credential_key(key)


def test_string_model_args_keep_order_and_other_values():
    args = "model_version=gpt-4o,api_key=sk-abc123,base_url=http://h:1/v1,token=hf_x,max_tokens=64"
    assert redact_model_args(args) == (f"model_version=gpt-4o,api_key={REDACTED},base_url=http://h:1/v1,"
                                       f"token={REDACTED},max_tokens=64")


def test_value_with_commas_is_redacted_whole():
    assert redact_model_args("api_key=a,b,c,pretrained=x") == f"api_key={REDACTED},pretrained=x"


def test_mapping_and_empty_values():
    assert redact_model_args({"api_key": "sk-1", "pretrained": "p", "token": ""}) == {
        "api_key": REDACTED, "pretrained": "p", "token": ""}
    assert redact_model_args("") == ""
    assert redact_model_args(None) is None
    assert redact_model_args("pretrained=PULSE-ECG/PULSE-7B") == "pretrained=PULSE-ECG/PULSE-7B"
