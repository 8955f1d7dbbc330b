"""Credential-like model_args values never reach what we write."""

from __future__ import annotations

import pytest

from pulse_tasks.results.redaction import REDACTED, is_credential_key, redact_model_args


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


def test_api_key_in_model_args_reaches_no_report_page_submission_or_log(tmp_path, capsys, caplog):
    """lmms-eval records model_args verbatim; nothing we write repeats a credential from them."""
    import logging

    from pulse_app.cli import main
    from pulse_tasks.results import runs

    secret = "sk-model-args-secret-7777777777"
    model_args = f"model_version=gpt-4o,api_key={secret},base_url=http://127.0.0.1:1/v1"
    recs, resps = runs.synthetic_run(seed=3, scale=0.02)
    first = runs.write_run(tmp_path / "a", "api-model", recs, resps, model_args=model_args)
    second = runs.write_run(tmp_path / "b", "api-model", recs, resps, model_args=model_args)
    report_dir = tmp_path / "report"
    caplog.set_level(logging.DEBUG)
    for argv in (["report", str(first), "--resamples", "0"], ["report", str(first), "--format", "json", "--resamples", "0"],
                 ["report", str(first), "--format", "html", "--resamples", "0", "--out", str(report_dir)],
                 ["compare", str(first), str(second), "--resamples", "0"],
                 ["submit", str(first), "--out", str(tmp_path / "sub.json"), "--resamples", "0", "--allow-failures",
                  "--attach-predictions"]):
        main(argv)
        captured = capsys.readouterr()
        assert secret not in captured.out + captured.err, argv
    written = [p.read_text(encoding="utf-8") for p in (report_dir / "ecgbench_report.html", tmp_path / "sub.json")]
    assert all(secret not in text for text in written)
    assert "api_key=***" in written[1] and "api_key=***" in written[0]
    assert secret not in caplog.text
