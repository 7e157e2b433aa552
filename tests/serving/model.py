"""A stand-in model server for the serving tests: standard library only.

GET /health answers 200 (or 500 when started with --unhealthy); /slow
answers after 3 seconds; any other GET or POST answers JSON with the version given on the command line, the port and
the pid, so a test can tell which replica answered. Listens on 127.0.0.1
at $PORT (or the variable named by --port-env).
"""

import argparse
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("version")
    p.add_argument("--port-env", default="PORT")
    p.add_argument("--unhealthy", action="store_true")
    args = p.parse_args()
    port = int(os.environ[args.port_env])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, code, body):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                if args.unhealthy:
                    self.answer(500, '{"healthy": false}')
                else:
                    self.answer(200, '{"healthy": true}')
                return
            if self.path == "/slow":
                time.sleep(3)
            self.answer(
                200,
                json.dumps({"version": args.version, "port": port, "pid": os.getpid()}),
            )

        do_HEAD = do_GET
        do_POST = do_GET

        def log_message(self, *a):
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
