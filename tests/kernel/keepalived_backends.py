"""Real servers that pass every check of tests/data/keepalived (run in their namespace).

``python -m tests.kernel.keepalived_backends CERT KEY``: HTTP answering 200 "ok" on
every address at ports 80, 443 and 8080; HTTPS the same on 8443 (CERT/KEY); DNS on
10.91.2.11:53 answering every query NOERROR; UDP on 10.91.2.12:53 answering "pong".
Prints "ready" once listening; runs until killed.
"""

from __future__ import annotations

import http.server
import socket
import socketserver
import ssl
import sys
import threading


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _udp(address: str, answer: object) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))

    def serve() -> None:
        while True:
            data, peer = sock.recvfrom(2048)
            reply = answer(data)  # type: ignore[operator]
            if reply:
                sock.sendto(reply, peer)

    threading.Thread(target=serve, daemon=True).start()


def _dns(query: bytes) -> bytes:
    if len(query) < 12:
        return b""
    flags = int.from_bytes(query[2:4], "big") | 0x8000  # a response, rcode 0
    return query[:2] + flags.to_bytes(2, "big") + query[4:]


def main() -> None:
    cert, key = sys.argv[1], sys.argv[2]
    servers = [_Server(("0.0.0.0", port), _Ok) for port in (80, 443, 8080)]
    tls = _Server(("0.0.0.0", 8443), _Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    servers.append(tls)
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    _udp("10.91.2.11", _dns)
    _udp("10.91.2.12", lambda data: b"pong")
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
