#!/usr/bin/env python3
"""A time stamping authority over HTTP for tests/timestamps.rs: OpenSSL's own TSA
(`openssl ts -reply`) behind a tiny HTTP server.

    tsa_server.py PORT CONFIG WORKDIR

Listens on 127.0.0.1:PORT. Each POST with Content-Type application/timestamp-query is written to
a file under WORKDIR, answered by `openssl ts -reply -config CONFIG -section tsa_config1`, and
the reply is sent back as application/timestamp-reply. Each request is logged to
WORKDIR/requests.log (one line: the query's and the reply's sizes, or the failure).
"""

import http.server
import os
import subprocess
import sys
import tempfile

PORT = int(sys.argv[1])
CONFIG = sys.argv[2]
WORKDIR = sys.argv[3]


def log(line):
    with open(os.path.join(WORKDIR, "requests.log"), "a", encoding="utf-8") as f:
        f.write(line + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        query = self.rfile.read(length)
        content_type = self.headers.get("Content-Type", "")
        if content_type != "application/timestamp-query":
            log(f"refused: Content-Type {content_type!r}")
            self.send_error(415, "expected application/timestamp-query")
            return
        with tempfile.TemporaryDirectory(dir=WORKDIR) as tmp:
            query_file = os.path.join(tmp, "q.tsq")
            reply_file = os.path.join(tmp, "r.tsr")
            with open(query_file, "wb") as f:
                f.write(query)
            done = subprocess.run(
                [
                    "openssl", "ts", "-reply",
                    "-config", CONFIG,
                    "-section", "tsa_config1",
                    "-queryfile", query_file,
                    "-out", reply_file,
                ],
                capture_output=True,
            )
            if done.returncode != 0:
                why = done.stderr.decode(errors="replace").strip()
                log(f"openssl ts -reply failed: {why}")
                self.send_error(500, "openssl ts -reply failed")
                return
            with open(reply_file, "rb") as f:
                reply = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        log(f"query {len(query)} bytes, reply {len(reply)} bytes")

    def log_message(self, format, *args):
        sys.stderr.write("tsa_server: " + (format % args) + "\n")


if __name__ == "__main__":
    server = http.server.HTTPServer(("127.0.0.1", PORT), Handler)
    sys.stderr.write(f"tsa_server: listening on 127.0.0.1:{PORT}\n")
    sys.stderr.flush()
    server.serve_forever()
