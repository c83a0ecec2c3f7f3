"""A tiny HTTP real server for the lab: answers every GET with its own name.

``/slow?seconds=N`` holds the response for N seconds (bounded), so tests can keep
a connection open across a drain.
"""

from __future__ import annotations

import argparse
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=80)
    args = parser.parse_args()
    name = args.name.encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/slow":
                seconds = min(float(parse_qs(url.query).get("seconds", ["1"])[0]), 120.0)
                time.sleep(seconds)
            body = name + b"\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET
        daemon_threads = True
        allow_reuse_address = True

    Server(("0.0.0.0", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
