#!/usr/bin/env python3
"""Test backends for the proxy routes (tests/services/run): each NAME=URL
argument (http:// or https://, address and port) gets a server that answers
every GET with "backend NAME". https ones use the throwaway certificate given
with --cert/--key (made by the test, never a real one)."""
import argparse
import http.server
import ssl
import threading
import urllib.parse


def handler(name):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"backend {name}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("backends", nargs="+", metavar="NAME=URL")
    args = parser.parse_args()
    servers = []
    for spec in args.backends:
        name, url = spec.split("=", 1)
        u = urllib.parse.urlsplit(url)
        server = http.server.ThreadingHTTPServer((u.hostname, u.port), handler(name))
        if u.scheme == "https":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(args.cert, args.key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        servers.append(server)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
