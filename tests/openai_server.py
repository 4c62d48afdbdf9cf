"""A tiny OpenAI-compatible chat server on loopback that records what its clients send.

It speaks the two forms of ``POST /v1/chat/completions`` the product's clients use: a
streamed reply (SSE ``data:`` lines, one chunk per piece, then a chunk with ``usage`` when
the request asks for it with ``stream_options.include_usage``, as vLLM's server does) and a
whole reply. ``GET`` answers 200 (``/health``). Each request's path, ``Authorization`` header
and JSON body are recorded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rag.server import api_base_url


class RecordingChatServer:
    """Answers every chat request with ``pieces`` and reports ``completion_tokens`` in its usage
    (a streamed reply only when asked, and never when ``reports_usage`` is false).

    Use it as a context manager; ``base_url`` is the ``/v1`` address to give a client.
    """

    def __init__(
        self, pieces: Sequence[str] = ("Hi",), *, completion_tokens: int = 1, reports_usage: bool = True
    ) -> None:
        self.pieces = tuple(pieces)
        self.completion_tokens = completion_tokens
        self.reports_usage = reports_usage
        self.seen: list[tuple[str, str | None]] = []
        self.bodies: list[dict[str, Any]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.httpd.server_address[1]
        self.base_url = api_base_url("127.0.0.1", self.port)
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> RecordingChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": 7,
            "completion_tokens": self.completion_tokens,
            "total_tokens": 7 + self.completion_tokens,
        }

    def _stream_body(self, request: dict[str, Any]) -> bytes:
        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": choices}
            return f"data: {json.dumps(body | extra)}\n\n"

        lines = [
            chunk([{"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}])
            for piece in self.pieces
        ]
        lines.append(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        if self.reports_usage and (request.get("stream_options") or {}).get("include_usage"):
            lines.append(chunk([], usage=self._usage()))
        lines.append("data: [DONE]\n\n")
        return "".join(lines).encode()

    def _whole_body(self) -> bytes:
        message = {"role": "assistant", "content": "".join(self.pieces)}
        body = {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": self._usage(),
        }
        return json.dumps(body).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.seen.append((self.path, self.headers.get("Authorization")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                server.seen.append((self.path, self.headers.get("Authorization")))
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.bodies.append(request)
                streamed = bool(request.get("stream"))
                body = server._stream_body(request) if streamed else server._whole_body()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream" if streamed else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
