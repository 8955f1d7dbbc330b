"""`ecgbench ask` and Studio's Ask on a model served at an OpenAI-compatible URL (`vllm serve`).

A loopback fake server (tests/judge_server.py) speaks the chat-completions protocol to the real
``openai`` SDK, streaming included; tests read back exactly what it received: the image as a data
URL with the question, the earlier turns as messages, the decoding, and which key reached it.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from judge_server import FakeJudgeServer, Reply, completion
from PIL import Image

from pulse_app.cli import main
from pulse_models.testing import make_ecg_like_image

QUESTION = "What is the rhythm?"
FOLLOW_UP = "Explain your answer."
MODEL = "PULSE-ECG/PULSE-7B"
USER_KEY = "sk-user-openai-key-0123456789"
ASK_KEY = "sk-served-model-key-0123456789"
ECGBENCH = Path(sys.executable).with_name("ecgbench")


def answering(request: dict, n: int) -> Reply:
    """An answer naming the turn (user messages so far) and the request's number."""
    turn = sum(1 for m in request["messages"] if m["role"] == "user")
    return Reply(body=completion(f"Sinus rhythm at 75 bpm, turn {turn}, request {n}.", prompt_tokens=300,
                                 completion_tokens=12))


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ECGBENCH_ASK_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("served-img") / "ecg.png"
    make_ecg_like_image(100, 60, seed=3).save(path)
    return path


@pytest.fixture
def server():
    with FakeJudgeServer(answering, api_key=None) as srv:
        yield srv


def _ask(capsys, server_url: str, image: Path, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["ask", "--api-base", server_url, "--api-model", MODEL, "--image", str(image), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _data_url_image(url: str) -> Image.Image:
    head, data = url.split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def test_the_request_carries_the_image_and_question_and_the_answer_is_printed(server, image_path, capsys, clean_env):
    rc, out, err = _ask(capsys, server.url, image_path, QUESTION)
    assert rc == 0, err
    assert out == "Sinus rhythm at 75 bpm, turn 1, request 1.\n"
    (request,) = server.requests
    assert request["model"] == MODEL and request["stream"] is True
    assert request["temperature"] == 0 and request["max_tokens"] == 1024  # the reference decoding
    (message,) = request["messages"]
    image_part, text_part = message["content"]
    assert message["role"] == "user" and text_part == {"type": "text", "text": QUESTION}
    sent = _data_url_image(image_part["image_url"]["url"])
    assert sent.tobytes() == Image.open(image_path).convert("RGB").tobytes()  # lossless: the same pixels


def test_chat_second_turn_carries_the_first_answer(server, image_path, capsys, clean_env):
    clean_env.setattr(sys, "stdin", io.StringIO(FOLLOW_UP + "\n"))
    rc, out, err = _ask(capsys, server.url, image_path, "--chat", "--max-new-tokens", "64", QUESTION)
    assert rc == 0, err
    first, second = "Sinus rhythm at 75 bpm, turn 1, request 1.", "Sinus rhythm at 75 bpm, turn 2, request 2."
    assert out.splitlines() == [first, second]
    messages = server.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"][0]["type"] == "image_url" and messages[0]["content"][1]["text"] == QUESTION
    assert messages[1]["content"] == first and messages[2]["content"] == [{"type": "text", "text": FOLLOW_UP}]
    assert all(r["max_tokens"] == 64 for r in server.requests)


def test_json_prints_the_answer_and_the_servers_token_counts(server, image_path, capsys, clean_env):
    rc, out, err = _ask(capsys, server.url, image_path, "--json", "--temperature", "0.5", "--top-p", "0.9", QUESTION)
    assert rc == 0, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["answer"] == "Sinus rhythm at 75 bpm, turn 1, request 1." and record["format"] == "served"
    assert record["api_base"] == server.url and record["model"] == MODEL
    assert record["tokens"] == {"prompt": 300, "answer": 12}
    assert record["image"]["width"] == 100 and record["image"]["height"] == 60
    (request,) = server.requests
    assert not request.get("stream") and request["temperature"] == 0.5 and request["top_p"] == 0.9


def test_openai_key_is_not_sent_to_another_host(server, image_path, capsys, clean_env):
    clean_env.setenv("OPENAI_API_KEY", USER_KEY)  # belongs to api.openai.com
    rc, _, err = _ask(capsys, server.url, image_path, QUESTION)
    assert rc == 0, err
    assert server.auth == ["Bearer EMPTY"]  # the placeholder vLLM accepts, never the user's key
    clean_env.setenv("ECGBENCH_ASK_API_KEY", ASK_KEY)
    assert _ask(capsys, server.url, image_path, QUESTION)[0] == 0
    assert server.auth[-1] == f"Bearer {ASK_KEY}"


def test_openai_key_goes_to_its_own_endpoint(image_path, capsys, clean_env):
    with FakeJudgeServer(answering, api_key=USER_KEY) as srv:
        clean_env.setenv("OPENAI_API_KEY", USER_KEY)
        clean_env.setenv("OPENAI_BASE_URL", srv.url)  # the key's own endpoint
        rc, out, err = _ask(capsys, srv.url, image_path, QUESTION)
        assert rc == 0 and out.strip(), err
        assert srv.auth == [f"Bearer {USER_KEY}"]


def test_a_refused_key_is_one_line_without_the_key(image_path, capsys, clean_env):
    with FakeJudgeServer(answering, api_key="sk-the-servers-own-key-0123") as srv:  # echoes a wrong key back
        clean_env.setenv("ECGBENCH_ASK_API_KEY", ASK_KEY)
        rc, out, err = _ask(capsys, srv.url, image_path, QUESTION)
        assert rc == 1 and out.strip() == ""
        assert len(err.strip().splitlines()) == 1 and "HTTP 401" in err and "ECGBENCH_ASK_API_KEY" in err
        assert ASK_KEY not in err
        clean_env.delenv("ECGBENCH_ASK_API_KEY")
        rc, _, err = _ask(capsys, srv.url, image_path, QUESTION)
        assert rc == 1 and "set ECGBENCH_ASK_API_KEY" in err


def test_user_info_in_the_url_is_never_shown(image_path, capsys, clean_env):
    url = f"http://someone:{ASK_KEY}@127.0.0.1:{_closed_port()}/v1"
    rc, _, err = _ask(capsys, url, image_path, QUESTION)
    assert rc == 1 and "cannot reach the model server at http://127.0.0.1:" in err and ASK_KEY not in err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode", [[], ["--json"]])
def test_an_unreachable_server_is_one_line_saying_what_to_do(mode, image_path, capsys, clean_env):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    rc, out, err = _ask(capsys, url, image_path, *mode, QUESTION)
    assert rc == 1 and out.strip() == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("ecgbench ask: error: cannot reach the model server at " + url)
    assert "vllm serve" in line and "--api-base" in line


@pytest.mark.parametrize("body", [{"hello": "world"}, "<html><body>a web app</body></html>"])
@pytest.mark.parametrize("mode", [[], ["--json"]])
def test_a_reply_that_is_no_chat_completion_is_one_line(body, mode, image_path, capsys, clean_env):
    with FakeJudgeServer(lambda request, n: Reply(body=body), api_key=None) as srv:
        rc, _, err = _ask(capsys, srv.url, image_path, *mode, QUESTION)
    assert rc == 1
    (line,) = err.strip().splitlines()
    assert "not a chat completion" in line and "OpenAI-compatible" in line


def test_unknown_model_names_what_to_check(image_path, capsys, clean_env):
    missing = Reply(404, {"error": {"message": "The model `x` does not exist.", "code": 404}})
    with FakeJudgeServer(lambda request, n: missing, api_key=None) as srv:
        rc, _, err = _ask(capsys, srv.url, image_path, QUESTION)
    assert rc == 1 and "HTTP 404" in err and "--api-model" in err and "/v1/models" in err


@pytest.mark.parametrize("argv, message", [
    (["--api-base", "http://localhost:8000/v1"], "needs both --api-base URL and --api-model NAME"),
    (["--api-model", MODEL], "needs both --api-base URL and --api-model NAME"),
    (["--model", "DIR", "--api-base", "http://localhost:8000/v1", "--api-model", MODEL], "not both"),
    (["--api-base", "localhost:8000", "--api-model", MODEL], "is not an http(s) URL"),
    (["--api-base", "http://localhost:8000/v1", "--api-model", MODEL, "--num-beams", "2"], "--num-beams"),
    ([], "give --model (a checkpoint) or --api-base and --api-model"),
])
def test_bad_model_choices_are_one_line(argv, message, image_path, capsys, clean_env):
    capsys.readouterr()
    rc = main(["ask", "--image", str(image_path), *argv, QUESTION])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_console_script_asks_a_served_model(server, image_path, clean_env):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    done = subprocess.run([str(ECGBENCH), "ask", "--api-base", server.url, "--api-model", MODEL, "--image",
                           str(image_path), QUESTION], capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Sinus rhythm at 75 bpm, turn 1, request 1.\n"
    assert len(server.requests) == 1


# ---------------------------------------------------------------- Studio's Ask


def _studio(argv: list[str]):
    from pulse_app import studio as st

    parser = argparse.ArgumentParser()
    st.add_arguments(parser)
    asker = st.asker_from_args(parser.parse_args(argv))
    asker.start()
    return st.Studio([], None, asker)


def test_studio_ask_streams_a_served_models_answers_over_two_turns(server, image_path, clean_env):
    state = _studio(["--api-base", server.url, "--api-model", MODEL])
    assert MODEL in state.asker.status() and server.url in state.asker.status()
    updates = list(state.ask(str(image_path), QUESTION, [], 32, 0.0))
    chat, turns, facts, message, box = updates[-1]
    first = "Sinus rhythm at 75 bpm, turn 1, request 1."
    assert message == "" and box == "" and turns == [[QUESTION, first]]
    assert chat == [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": first}]
    streamed = [u[0][-1]["content"] for u in updates[:-1] if u[3] == "generating ..."]
    assert len(streamed) >= 2 and streamed[-1] == first and all(first.startswith(s) for s in streamed)
    assert facts["format"] == "served" and facts["answer"] == first and facts["tokens"] == {"prompt": 300, "answer": 12}
    assert facts["image"]["path"] == image_path.name
    request = server.requests[0]
    assert request["stream"] is True and request["max_tokens"] == 32 and request["temperature"] == 0
    assert _data_url_image(request["messages"][0]["content"][0]["image_url"]["url"]).size == (100, 60)

    *_, (chat2, turns2, facts2, message2, _) = state.ask(str(image_path), FOLLOW_UP, turns, 16, 0.0)
    assert message2 == "" and len(turns2) == 2 and facts2["turn"] == 2 and len(chat2) == 4
    messages = server.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == first and messages[2]["content"] == [{"type": "text", "text": FOLLOW_UP}]


def test_studio_ask_shows_an_unreachable_server_as_a_message(image_path, clean_env):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    state = _studio(["--api-base", url, "--api-model", MODEL])
    *_, (chat, turns, facts, message, box) = state.ask(str(image_path), QUESTION, [], 16, 0.0)
    assert chat == [] and turns == [] and facts is None and box == QUESTION
    assert message.startswith("**generation failed**: cannot reach the model server at " + url)


def test_studio_cli_refuses_half_a_served_model(capsys):
    from pulse_app import studio as st

    parser = argparse.ArgumentParser()
    st.add_arguments(parser)
    assert st.run(parser.parse_args(["--api-model", MODEL])) == 2
    assert "needs both --api-base URL and --api-model NAME" in capsys.readouterr().err


def test_studio_page_asks_a_served_model(browser_page, server, clean_env):
    """The Ask tab in the browser: a served model's streamed answer, then a follow-up carrying it."""
    pytest.importorskip("gradio")
    from pulse_app import studio as st

    parser = argparse.ArgumentParser()
    st.add_arguments(parser)
    state = st.Studio([], None, st.asker_from_args(parser.parse_args(["--api-base", server.url, "--api-model", MODEL])))
    app = st.launch(state, port=0, block=False)
    try:
        page = browser_page
        page.set_default_timeout(60_000)  # two shared CPU cores
        page.goto(app.local_url)
        page.wait_for_function("document.querySelector('#ask-status') && "
                               "document.querySelector('#ask-status').innerText.includes('answers come from')")
        page.set_input_files("#ask-upload input[type=file]", str(state.examples[0]))
        page.wait_for_function("(() => { const i = document.querySelector('#ask-preview img');"
                               " return i && i.naturalWidth > 0; })()")
        page.fill("#ask-question textarea", QUESTION)
        page.click("#ask-send")
        page.wait_for_function("document.querySelector('#ask-facts').innerText.includes('served')")
        page.fill("#ask-question textarea", FOLLOW_UP)
        page.click("#ask-send")
        page.wait_for_function("document.querySelector('#ask-chat').innerText.includes('turn 2, request 2')")
        chat = page.inner_text("#ask-chat")
        assert QUESTION in chat and FOLLOW_UP in chat and "turn 1, request 1" in chat
    finally:
        app.close()
    assert [m["role"] for m in server.requests[1]["messages"]] == ["user", "assistant", "user"]
    assert server.requests[1]["messages"][1]["content"] == "Sinus rhythm at 75 bpm, turn 1, request 1."
