"""A screenshot of a page as it is after SECONDS of real time, through the Chrome DevTools
Protocol (stdlib only): unlike `chromium --screenshot`, it does not wait for the page's network
to go idle, so a dashboard whose event stream stays open (a running sweep) can be taken.

    python3 scripts/cdp_screenshot.py CHROMIUM URL OUT.png SECONDS [WIDTH HEIGHT]
"""

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request


class WebSocket:
    """Just enough of RFC 6455 for a client: text frames out (masked), frames in."""

    def __init__(self, url):
        host_port, path = url.removeprefix("ws://").split("/", 1)
        host, port = host_port.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"no websocket: {head!r}")

    def send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        header = bytes([0x81]) + (
            bytes([0x80 | n]) if n < 126
            else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536
            else bytes([0x80 | 127]) + struct.pack(">Q", n)
        )
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise RuntimeError("websocket closed")
            out += chunk
        return out

    def receive(self):
        message = b""
        while True:
            first, second = self._exact(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            message += self._exact(n)
            if first & 0x80:
                return message.decode()


def main():
    chromium, url, out, seconds = sys.argv[1:5]
    width, height = (int(v) for v in (sys.argv[5:7] or (1280, 2600)))
    port = 9300 + os.getpid() % 500
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--remote-debugging-port={port}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            deadline = time.time() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
                        pages = [t for t in json.load(r) if t["type"] == "page"]
                    if pages:
                        break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError("chromium's DevTools never came up")
                time.sleep(0.2)
            ws = WebSocket(pages[0]["webSocketDebuggerUrl"])
            calls = iter(range(1, 1 << 30))

            def call(method, **params):
                i = next(calls)
                ws.send(json.dumps({"id": i, "method": method, "params": params}))
                while True:
                    answer = json.loads(ws.receive())
                    if answer.get("id") == i:
                        if "error" in answer:
                            raise RuntimeError(f"{method}: {answer['error']}")
                        return answer["result"]

            call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                 deviceScaleFactor=1, mobile=False)
            call("Page.navigate", url=url)
            time.sleep(float(seconds))
            shot = call("Page.captureScreenshot", format="png")
            with open(out, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        finally:
            os.killpg(browser.pid, 9)  # the browser and its renderers
            browser.wait()


if __name__ == "__main__":
    main()
