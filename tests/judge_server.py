"""A loopback HTTP server speaking the chat-completions protocol, for driving the real ``openai``
client in tests and benchmarks.

It binds 127.0.0.1 on a free port, answers at most ``max_requests`` requests, shuts itself
down after ``lifetime_s`` seconds, counts requests and the most requests in flight at once, and
checks the API key (OpenAI ``Authorization: Bearer`` or Azure ``api-key``). A wrong key gets a
401 whose body echoes the key, as some providers do, so redaction is tested for real. Every
chat request's credential header (``auth``; every one of them in ``credentials``), reply status (``statuses``)
and arrival time (``times``, ``time.monotonic``) are recorded, so tests can prove which key reached which
host and count what the server answered, and when. A successful reply to a request with
``"stream": true`` goes out as the SSE chunks the SDK's ``stream=True`` reads (:func:`stream_chunks`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SCORES_MARKER = re.compile(r"SCORES=(-?[\d.]+),(-?[\d.]+),(-?[\d.]+)")
# The candidate's text in our prompt layout (markers in the ground truth must not count).
CANDIDATE_BLOCK = re.compile(r"\[(?:Generated report|Turn \d+ assistant response)\]\n(.*?)\n\[End of", re.DOTALL)


@dataclass
class Reply:
    """What the fake server sends back for one request."""

    status: int = 200
    body: Any = None  # dict -> JSON; str -> sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def completion(content: str, prompt_tokens: int = 120, completion_tokens: int = 60, model: str = "fake") -> dict[str, Any]:
    """A chat.completion object carrying ``content``."""
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def stream_chunks(body: dict[str, Any], pieces: int = 3) -> list[dict[str, Any]]:
    """A chat.completion split into ``chat.completion.chunk`` objects: the content in about
    ``pieces`` deltas, one with the finish reason, then (as ``include_usage`` asks) the usage."""
    content = body["choices"][0]["message"]["content"] or ""
    step = max(1, -(-len(content) // pieces))
    parts = [content[i:i + step] for i in range(0, len(content), step)]
    base = {"id": body.get("id", "chatcmpl-fake"), "object": "chat.completion.chunk", "created": body.get("created", 0),
            "model": body.get("model", "fake")}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": part} if k == 0 else
                                    {"content": part}, "finish_reason": None}]} for k, part in enumerate(parts)]
    usage = [{**base, "choices": [], "usage": body["usage"]}] if body.get("usage") else []  # stream_options' last chunk
    return [*chunks, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, *usage]


def verdict_json(keys: tuple[str, ...], scores: tuple[float, ...], nested: bool = True) -> str:
    """A judge reply in the reference shape ``{Criterion: {Score, Explanation}}`` (or bare numbers)."""
    if nested:
        return json.dumps({k: {"Score": s, "Explanation": f"{k} graded."} for k, s in zip(keys, scores)})
    return json.dumps(dict(zip(keys, scores)))


def user_text(request: dict[str, Any]) -> str:
    return "\n".join(m.get("content", "") for m in request.get("messages", []) if m.get("role") == "user")


def failing_on(needles: list[str], base: Callable[[dict[str, Any], int], Reply] | None = None,
               delay_s: float = 0.0) -> Callable[[dict[str, Any], int], Reply]:
    """A responder failing for good (HTTP 500 after ``delay_s``, ``Retry-After: 0`` so retries are
    immediate) on requests whose user text contains one of ``needles`` (e.g. an item's gold answer);
    the others get ``base`` (default :func:`marker_responder`)."""
    def respond(request: dict[str, Any], n: int) -> Reply:
        text = user_text(request)
        if any(needle in text for needle in needles):
            return Reply(500, {"error": {"message": "fake judge: permanent failure for this item"}},
                         headers={"Retry-After": "0"}, delay_s=delay_s)
        return (base or marker_responder)(request, n)
    return respond


def hanging_after(n_answered: int, hang_s: float = 30.0, base: Callable[[dict[str, Any], int], Reply] | None = None
                  ) -> Callable[[dict[str, Any], int], Reply]:
    """A responder that answers the first ``n_answered`` requests with ``base`` (default
    :func:`marker_responder`), then accepts every request and sits on it for ``hang_s``."""
    def respond(request: dict[str, Any], n: int) -> Reply:
        if n <= n_answered:
            return (base or marker_responder)(request, n)
        return Reply(503, {"error": {"message": "fake judge: hung"}}, delay_s=hang_s)
    return respond


def marker_responder(request: dict[str, Any], n: int) -> Reply:
    """Default behaviour: the scores come from ``SCORES=a,b,c`` in the candidate text (10s if absent);
    keys follow the rubric (report or arena) found in the system message."""
    system = " ".join(m.get("content", "") for m in request.get("messages", []) if m.get("role") == "system")
    keys = ("Accuracy", "Completeness", "Instruction Adherence") if "Accuracy" in system else ("Diagnosis", "Waveform", "Rhythm")
    candidates = "\n".join(CANDIDATE_BLOCK.findall(user_text(request)))
    found = SCORES_MARKER.search(candidates)
    scores = tuple(float(x) for x in found.groups()) if found else (10.0, 10.0, 10.0)
    return Reply(body=completion(verdict_json(keys, scores)))


class FakeJudgeServer:
    """Context manager: ``with FakeJudgeServer(responder) as srv: srv.url``."""

    def __init__(self, responder: Callable[[dict[str, Any], int], Reply] = marker_responder, *,
                 api_key: str = "sk-test-key-0123456789abcdef", latency_s: float = 0.0,
                 max_requests: int = 5000, lifetime_s: float = 120.0) -> None:
        self.responder = responder
        self.api_key = api_key
        self.latency_s = latency_s
        self.max_requests = max_requests
        self.lifetime_s = lifetime_s
        self.lock = threading.Lock()
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.auth: list[str | None] = []  # the credential header of every chat request, as sent
        self.credentials: list[dict[str, str]] = []  # every credential header of every chat request (both kinds)
        self.statuses: list[int] = []  # the status answered to every chat request (same order as requests)
        self.times: list[float] = []  # when every chat request arrived (time.monotonic, same order)
        self._server: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def root(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the SDK reuses connections

            def log_message(self, *args: Any) -> None:  # quiet test output
                pass

            def _send(self, reply: Reply) -> None:
                body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = body.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _send_stream(self, chunks: list[dict[str, Any]]) -> None:
                data = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(data.encode())))
                self.end_headers()
                self.wfile.write(data.encode())

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                arrived = time.monotonic()
                request: Any = None
                with srv.lock:
                    srv.count += 1
                    n = srv.count
                    srv.in_flight += 1
                    srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
                try:
                    if n > srv.max_requests:
                        # a dying server: this connection closes too, so the client finds nobody listening next
                        reply = Reply(503, {"error": {"message": "fake server request limit reached"}},
                                      headers={"Connection": "close"})
                        threading.Thread(target=srv.stop, daemon=True).start()
                    elif not self.path.split("?")[0].rstrip("/").endswith("/chat/completions"):
                        reply = Reply(404, {"error": {"message": f"no route {self.path}"}})
                    else:
                        request = json.loads(raw or b"{}")
                        given = self.headers.get("api-key") or (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                        if srv.api_key is not None and given != srv.api_key:
                            reply = Reply(401, {"error": {"message": f"Incorrect API key provided: {given}.",
                                                          "type": "invalid_request_error", "code": "invalid_api_key"}})
                        else:
                            reply = srv.responder(request, n)
                        with srv.lock:
                            srv.requests.append(request)
                            srv.paths.append(self.path)
                            srv.auth.append(self.headers.get("Authorization") or self.headers.get("api-key"))
                            srv.credentials.append({k: v for k in ("Authorization", "api-key")
                                                    if (v := self.headers.get(k)) is not None})
                            srv.statuses.append(reply.status)
                            srv.times.append(arrived)
                    time.sleep(srv.latency_s + reply.delay_s)
                    streamed = (reply.status == 200 and isinstance(reply.body, dict) and "choices" in reply.body
                                and isinstance(request, dict) and request.get("stream"))
                    self._send_stream(stream_chunks(reply.body)) if streamed else self._send(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                finally:
                    with srv.lock:
                        srv.in_flight -= 1

        return Handler

    def reset(self) -> None:
        """Forget the requests seen so far (one server shared by several tests)."""
        with self.lock:
            self.count = self.max_in_flight = 0
            for seen in (self.requests, self.paths, self.auth, self.credentials, self.statuses, self.times):
                seen.clear()

    def start(self) -> FakeJudgeServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(), bind_and_activate=False)
        server.daemon_threads = True
        server.request_queue_size = 128  # bursts of concurrent connects must not hit the backlog
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if self._timer is not None:
            self._timer.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeJudgeServer:  # noqa: PYI034 - typing.Self needs 3.11, we support 3.10
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
