"""A stand-in judge endpoint for the tests: a standard-library HTTP server on 127.0.0.1 whose behaviour the request's
`model` picks, so one process serves every case:

  ok       "Score: N" where N is the number written <<N>> in the request (the judge prompt shows the completion)
  slow     the ok answer after `slow_s` seconds (a judge that times out)
  garbage  200 with an HTML body instead of JSON
  noscore  a valid chat reply with no number in it
  flaky    503 to the first request for each distinct text, then the ok answer (retries with back-off)
  auth     the ok answer only with `Authorization: Bearer $JUDGE_STUB_KEY`, else 401

GET /health answers; GET /stats gives {requests, max_inflight, authorized}. Started with `judge_stub(log)`, which runs
`python -m tests.helpers.judge_stub slow_s=S port=P` through the tests' server helper.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# in flight per mode: a slow request a timed-out client left behind must not count against another test's "ok" ones
STATE = {"requests": 0, "inflight": {}, "max_inflight": {}, "authorized": 0, "seen": set()}
LOCK = threading.Lock()
OPTS: dict[str, str] = {}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # quiet: the test log holds only what matters
        pass

    def do_GET(self) -> None:
        with LOCK:
            body = {k: v for k, v in STATE.items() if k != "seen"}
        self._send(200, json.dumps(body).encode())

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = request["messages"][-1]["content"]
        with LOCK:
            STATE["requests"] += 1
            mode = request["model"]
            STATE["inflight"][mode] = STATE["inflight"].get(mode, 0) + 1
            STATE["max_inflight"][mode] = max(STATE["max_inflight"].get(mode, 0), STATE["inflight"][mode])
        self._in_flight = mode
        try:
            self._answer(mode, text)
        finally:
            self._done()

    def _done(self) -> None:
        """Out of flight before the answer is written: a client that has its answer sends its next request at once,
        which this thread must not still be counted beside (5 in flight at max_concurrency=4, seen on a busy CI)."""
        mode, self._in_flight = getattr(self, "_in_flight", None), None
        if mode is not None:
            with LOCK:
                STATE["inflight"][mode] -= 1

    def _answer(self, mode: str, text: str) -> None:
        found = re.search(r"<<(-?[\d.]+)>>", text)
        reply = f"Score: {found.group(1) if found else 0}"
        time.sleep(0.05)  # long enough for concurrent requests to overlap
        if mode == "slow":
            time.sleep(float(OPTS.get("slow_s", "5")))
        elif mode == "garbage":
            return self._send(200, b"<html>upstream error</html>", "text/html")
        elif mode == "noscore":
            reply = "I cannot rate this."
        elif mode == "flaky":
            with LOCK:
                first = text not in STATE["seen"]
                STATE["seen"].add(text)
            if first:
                return self._send(503, b'{"error": "busy"}')
        elif mode == "auth":
            if self.headers.get("Authorization") != f"Bearer {os.environ.get('JUDGE_STUB_KEY')}":
                return self._send(401, b'{"error": "bad key"}')
            with LOCK:
                STATE["authorized"] += 1
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]}
        self._send(200, json.dumps(body).encode())

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self._done()
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to answer
            pass


@contextlib.contextmanager
def judge_stub(log: Path, slow_s: float = 3.0, **env: str) -> Iterator[str]:
    """The stub in a child process on a free port; yields its base URL (the judge's url is that + /v1)."""
    from tests.helpers.servers import server

    with server("tests.helpers.judge_stub", f"slow_s={slow_s}", log=log, **env) as url:
        yield url


if __name__ == "__main__":
    OPTS.update(a.split("=", 1) for a in sys.argv[1:])
    ThreadingHTTPServer(("127.0.0.1", int(OPTS["port"])), Handler).serve_forever()
