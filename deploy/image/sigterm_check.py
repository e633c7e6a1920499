"""SIGTERM under load: every request the server accepted must be answered.

Clients post /classify on fresh connections (no keep-alive, so each request is either
accepted by the server or not) while `podman stop` sends SIGTERM.  Outcomes: answered (200),
refused (the connection was refused or reset before any response: the server had stopped
accepting), failed (an error status, or a cut-off response).  Exits 1 on any failure.
"""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
import threading
import time

from zoo.vision import example_image

PORT, CONTAINER = int(sys.argv[1]), sys.argv[2]
BODY = json.dumps({"images": [base64.b64encode(example_image(500, 375)).decode()], "model": "resnet18"})
counts = {"answered": 0, "refused": 0, "failed": 0}
lock = threading.Lock()
stop = threading.Event()


def client() -> None:
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
        try:
            conn.connect()
            conn.request("POST", "/classify", BODY, {"Content-Type": "application/json", "Connection": "close"})
        except OSError:
            outcome = "refused"
        else:
            try:
                response = conn.getresponse()
                response.read()
                outcome = "answered" if response.status == 200 else "failed"
            except (ConnectionResetError, http.client.RemoteDisconnected):
                outcome = "refused"  # closed with no response byte: never reached the app
            except OSError:
                outcome = "failed"
        finally:
            conn.close()
        with lock:
            counts[outcome] += 1
        if outcome == "refused":
            time.sleep(0.05)


threads = [threading.Thread(target=client) for _ in range(8)]
for t in threads:
    t.start()
time.sleep(3)
before = dict(counts)
started = time.monotonic()
subprocess.run(["podman", "stop", "--time", "30", CONTAINER], check=True, capture_output=True)
stopped = time.monotonic() - started
time.sleep(1)
stop.set()
for t in threads:
    t.join()
print(json.dumps({"before_sigterm": before, "total": counts, "stop_seconds": round(stopped, 2)}))
sys.exit(1 if counts["failed"] else 0)
