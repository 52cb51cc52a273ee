"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 for backend tests.

Each request takes the next step of the script: ("ok", content[, prompt_tokens,
completion_tokens]), ("status", code), ("hang", seconds), ("garbage",), ("nochoices",).
When the script runs out the last step repeats. Requests are remembered for assertions."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeLLMServer:
    def __init__(self, script):
        self.script = list(script)
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._i = 0
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
                    step = server.script[min(server._i, len(server.script) - 1)]
                    server._i += 1
                server._answer(self, step, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _answer(self, h, step, body):
        kind = step[0]
        if kind == "hang":
            # Hold the connection (the client must time out), then go away quietly.
            self._stop.wait(step[1])
            return
        if kind == "status":
            payload = json.dumps({"error": {"message": f"scripted {step[1]}", "type": "x"}}).encode()
            h.send_response(step[1])
            h.send_header("Content-Type", "application/json")
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
            content = step[1]
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
