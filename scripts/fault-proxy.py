#!/usr/bin/env python3
"""A fault-injecting HTTP proxy for tests: it forwards requests to an upstream S3 server and fails a share of
them the ways object storage fails: 503 SlowDown, 500 InternalError, a connection reset, or a hang (no answer
until the client gives up). Which requests fail is random; the kinds of fault take turns.

Usage:
  scripts/fault-proxy.py --listen 127.0.0.1:PORT --upstream 127.0.0.1:8333 [--rate 0.3] [--hang 30]

Control requests (answered by the proxy itself, never forwarded):
  GET /__fault/rate/R         fail a share R (0 to 1) of requests from now on
  GET /__fault/poison/TEXT    fail every request whose path contains TEXT with a 500 (TEXT empty: none)
  GET /__fault/stats          JSON counts: forwarded, and each fault
Prints `fault proxy ready` on stdout once it listens. An unreachable upstream is answered with 503.
"""
import argparse
import http.client
import json
import random
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"rate": 0.0, "poison": "", "hang": 30.0, "upstream": ("127.0.0.1", 8333), "turn": 0}
FAULTS = ["503", "500", "reset", "hang"]
COUNTS = {"forwarded": 0, "503": 0, "500": 0, "reset": 0, "hang": 0, "poison": 0, "upstream_down": 0}


def count(what):
    with LOCK:
        COUNTS[what] += 1


ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
    "<RequestId>fault-proxy</RequestId></Error>"
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet
        pass

    def error_answer(self, status, code, message):
        body = ERROR_BODY.format(code=code, message=message).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def control(self):
        parts = self.path.split("/", 3)
        what = parts[2] if len(parts) > 2 else ""
        value = parts[3] if len(parts) > 3 else ""
        with LOCK:
            if what == "rate":
                STATE["rate"] = float(value)
            elif what == "poison":
                STATE["poison"] = value
            answer = json.dumps(dict(COUNTS, rate=STATE["rate"], poison=STATE["poison"])).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def handle_any(self):
        if self.path.startswith("/__fault/"):
            return self.control()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with LOCK:
            rate, poison, hang = STATE["rate"], STATE["poison"], STATE["hang"]
        if poison and poison in self.path:
            count("poison")
            return self.error_answer(500, "InternalError", "poisoned by the fault proxy")
        if random.random() < rate:
            # The kinds take turns, so that every kind is injected once a few requests failed.
            with LOCK:
                fault = FAULTS[STATE["turn"] % len(FAULTS)]
                STATE["turn"] += 1
            count(fault)
            if fault == "503":
                return self.error_answer(503, "SlowDown", "Please reduce your request rate.")
            if fault == "500":
                return self.error_answer(500, "InternalError", "We encountered an internal error.")
            self.close_connection = True
            if fault == "hang":
                time.sleep(hang)
            # A reset: close with SO_LINGER 0, so the peer gets RST.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        host, port = STATE["upstream"]
        try:
            upstream = http.client.HTTPConnection(host, port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
            upstream.request(self.command, self.path, body=body if length else None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            count("upstream_down")
            return self.error_answer(503, "ServiceUnavailable", "upstream unreachable: %s" % error)
        count("forwarded")
        self.send_response_only(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                self.send_header(key, value)
        declared = response.getheader("Content-Length")
        self.send_header("Content-Length", declared if self.command == "HEAD" and declared else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = handle_any


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True, help="HOST:PORT to listen on")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the S3 server")
    parser.add_argument("--rate", type=float, default=0.0, help="share of requests that fail (0 to 1)")
    parser.add_argument("--hang", type=float, default=30.0, help="seconds a hanging request waits before a reset")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    up_host, up_port = args.upstream.rsplit(":", 1)
    STATE.update(rate=args.rate, hang=args.hang, upstream=(up_host, int(up_port)))
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((host, int(port)), Handler)
    print("fault proxy ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
