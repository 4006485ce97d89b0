#!/usr/bin/env python3
"""A git smart-HTTP server for the e2e tests: `git http-backend` behind a small CGI shim.

Every request must carry HTTP basic auth with the user and password given on the command line;
anything else gets 401, so tests can prove that credentials are sent and checked.

Usage: git_http_server.py PORT REPO_ROOT USER PASSWORD
"""

import base64
import hmac
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class GitHandler(BaseHTTPRequestHandler):
    # git clients speak HTTP/1.1 with chunked request bodies for large pushes.
    protocol_version = "HTTP/1.1"
    repo_root = ""
    expected_auth = ""

    def do_GET(self):
        self.serve()

    def do_POST(self):
        self.serve()

    def log_message(self, fmt, *args):
        sys.stderr.write("git-http: " + (fmt % args) + "\n")

    def is_authorized(self):
        header = self.headers.get("Authorization", "")
        return hmac.compare_digest(header.encode(), self.expected_auth.encode())

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(length) if length else b""

    def serve(self):
        if not self.is_authorized():
            body = b"authentication required\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mooring-test-git"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        url = urlsplit(self.path)
        env = {
            "GIT_PROJECT_ROOT": self.repo_root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": url.path,
            "QUERY_STRING": url.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "REMOTE_USER": "test",
            "REMOTE_ADDR": self.client_address[0],
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
        }
        body = self.read_body()
        env["CONTENT_LENGTH"] = str(len(body))
        result = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = result.stdout.partition(b"\n\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split(" ")[0])
            elif name:
                headers.append((name.strip(), value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main():
    port, repo_root, user, password = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    GitHandler.repo_root = repo_root
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    GitHandler.expected_auth = f"Basic {token}"
    ThreadingHTTPServer(("127.0.0.1", int(port)), GitHandler).serve_forever()


if __name__ == "__main__":
    main()
