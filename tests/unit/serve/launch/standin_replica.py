"""A replica that starts in a second, for the rollout tests: `python standin_replica.py PORT
ROOT [POST_STATUS]` answers GET with the files under ROOT (/health, /v1/models, /load:
what the launcher and the router poll) and every POST with POST_STATUS (200: a chat
completion; else an error body), as a vLLM server's API would."""

from __future__ import annotations

import json
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Replica(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    post_status = 200

    def log_message(self, *_: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ok = self.post_status == 200
        answer = {"choices": [{"finish_reason": "stop"}]} if ok else {"error": "stand-in"}
        body = json.dumps(answer).encode()
        self.send_response(self.post_status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str]) -> None:
    port, root, *rest = argv
    Replica.post_status = int(rest[0]) if rest else 200
    server = ThreadingHTTPServer(("127.0.0.1", int(port)), partial(Replica, directory=root))
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
