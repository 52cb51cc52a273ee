"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 for backend tests.

Each request takes the next step of the script: ("ok", content[, prompt_tokens,
completion_tokens]), ("status", code), ("hang", seconds), ("garbage",), ("nochoices",),
("raw", code, content_type, body) (a proxy's HTML page, a huge error body),
("follow",): a model that follows the user turn (it answers with the first search/replace
example it reads there, else in prose, as a model that never saw the format does; shown the same
example again, on a file nothing has changed, it tries another value: 3x, 4x, ... the old one,
as a model that reads its earlier results does: the coordinator refuses a train.py tried before).
When the script runs out the last step repeats. Requests are remembered for assertions.

`drop_system=True` is a chat template without a system role: the model never sees it.
`down()` closes the port (connection refused) and `up()` opens the same port again.
"""
from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_EXAMPLE = re.compile(r"^DESCRIPTION:.*?^>>>>>>> REPLACE$", re.M | re.S)


_DOUBLE = re.compile(r"^DESCRIPTION: double (?P<name>\w+) \((?P<old>[\d.]+) -> (?P<new>[\d.]+)\)$", re.M)


def follow_user_turn(messages: list[dict], seen: dict[str, int] | None = None) -> str:
    """What a small instruction-following model answers: it copies the worked example of the
    last user turn (the format and lines that are in the file), or talks prose without one.
    `seen`: how often each example was answered before (the k-th repeat scales the old value
    by k + 2 instead of doubling it)."""
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    m = _EXAMPLE.search(user)
    if m is None:
        return "I would increase the learning rate, since the model seems to underfit."
    example = m.group(0)
    k = 0
    if seen is not None:
        k = seen.get(example, 0)
        seen[example] = k + 1
    d = _DOUBLE.search(example)
    if k and d:
        old = d.group("old")
        new = repr(float(old) * (k + 2)) if "." in old else str(int(old) * (k + 2))
        name = d.group("name")
        example = example.replace(d.group(0), f"DESCRIPTION: {name} {old} -> {new} (try {k + 1})")
        head, tail = example.split("=======", 1)   # the REPLACE side only: SEARCH stays the file's line
        tail = re.sub(rf"^({name}\s*=\s*){re.escape(d.group('new'))}(?=\s|$)", rf"\g<1>{new}", tail,
                      count=1, flags=re.M)
        example = head + "=======" + tail
    return "Sure! Here is my proposal.\n\n```\n" + example + "\n```\n"


class FakeLLMServer:
    def __init__(self, script, *, drop_system: bool = False):
        self.script = list(script)
        self.drop_system = drop_system
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.seen: list[list[dict]] = []      # the messages the "model" saw (after the template)
        self.closed_by_client = 0             # hung requests whose client closed the connection
        self._i = 0
        self._follow_seen: dict[str, int] = {}   # the follow model's memory
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                with server._lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    msgs = body.get("messages") or []
                    if server.drop_system:
                        msgs = [m for m in msgs if m.get("role") != "system"]
                    server.seen.append(msgs)
                    step = server.script[min(server._i, len(server.script) - 1)]
                    server._i += 1
                server._answer(self, step, body, msgs)

        self._handler = Handler
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def down(self) -> None:
        """Close the port: clients get connection refused until up()."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def up(self) -> None:
        """Listen on the same port again."""
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def _hold(self, h, seconds: float) -> None:
        """Hold the connection without answering; notice when the client closes it."""
        sock: socket.socket = h.connection
        end = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < end:
            r, _, _ = select.select([sock], [], [], 0.1)
            if r:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        with self._lock:
                            self.closed_by_client += 1
                        return
                except OSError:
                    with self._lock:
                        self.closed_by_client += 1
                    return

    def _answer(self, h, step, body, msgs):
        kind = step[0]
        if kind == "hang":
            # Hold the connection (the client must time out), then go away quietly.
            self._hold(h, step[1])
            return
        if kind == "status":
            payload = json.dumps({"error": {"message": f"scripted {step[1]}", "type": "x"}}).encode()
            h.send_response(step[1])
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            return
        if kind == "raw":
            # ("raw", status, content_type, body): a proxy's or a server's own page, as sent
            payload = step[3].encode()
            h.send_response(step[1])
            h.send_header("Content-Type", step[2])
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            return
        if kind == "garbage":
            payload = b"<html>502 proxy says hello</html>"
        elif kind == "nochoices":
            payload = json.dumps({"id": "x", "object": "chat.completion", "created": int(time.time()),
                                  "model": body.get("model"), "choices": []}).encode()
        else:
            content = follow_user_turn(msgs, self._follow_seen) if kind == "follow" else step[1]
            pt = step[2] if len(step) > 2 else 100
            ct = step[3] if len(step) > 3 else 50
            payload = json.dumps({
                "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
            }).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
