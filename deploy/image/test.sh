#!/usr/bin/env bash
# Run the CPU image as Kubernetes would (read-only root, /tmp writable, non-root, host network
# on loopback ports), wait for /readyz, call /classify and a v2 gRPC infer, then SIGTERM it
# under load: zero failed accepted requests.   IMAGE=localhost/zooserve:cpu deploy/image/test.sh
# With ZOOSERVE_API_TOKEN set, the container gets it (by name: the value stays off command lines),
# every request sends `Authorization: Bearer <token>`, and a request without it must get 401.
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-localhost/zooserve:cpu}
BIN=${BIN:-.venv/bin}
PORT=${PORT:-3555}
GRPC_PORT=${GRPC_PORT:-8555}
NAME=zooserve-image-test
auth_env=()
if [ -n "${ZOOSERVE_API_TOKEN:-}" ]; then auth_env=(-e ZOOSERVE_API_TOKEN); fi
podman rm -f "$NAME" >/dev/null 2>&1 || true
trap 'podman rm -f "$NAME" >/dev/null 2>&1 || true' EXIT
echo "image size: $(podman image inspect "$IMAGE" --format '{{.Size}}') bytes"
start=$(date +%s.%N)
podman run -d --name "$NAME" --runtime runc --network host --read-only --tmpfs /tmp \
  --ulimit nofile=10000:10000 --ulimit nproc=4096:4096 -e ZOOSERVE_GRPC_PORT="$GRPC_PORT" -e ZOOSERVE_GRPC_HOST=127.0.0.1 \
  ${auth_env[@]+"${auth_env[@]}"} "$IMAGE" bentoml serve services.bento.service:ZooServe --host 127.0.0.1 --port "$PORT" >/dev/null
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$PORT/readyz")" = 200 ] && break
  podman container exists "$NAME" || { echo "container exited"; exit 1; }
  sleep 0.2
done
echo "cold start to ready: $("$BIN/python" -c "print(round($(date +%s.%N) - $start, 1))") s"
curl -sf "127.0.0.1:$PORT/livez" | grep -q '"torch_imported": false'
if [ -n "${ZOOSERVE_API_TOKEN:-}" ]; then
  status=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d '{"seeds": [1]}' \
    "127.0.0.1:$PORT/generate")
  [ "$status" = 401 ] || { echo "a request without the token got $status, not 401"; exit 1; }
  echo "without the token: 401"
fi
"$BIN/python" - "$PORT" "$GRPC_PORT" <<'PY'
import base64, json, os, sys, urllib.request
import numpy as np
from zoo.vision import example_image
port, grpc_port = sys.argv[1], sys.argv[2]
token = os.environ.get("ZOOSERVE_API_TOKEN")
auth = {"authorization": f"Bearer {token}"} if token else {}
body = json.dumps({"images": [base64.b64encode(example_image(500, 375)).decode()]}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/classify", body, {"Content-Type": "application/json", **auth})
result = json.load(urllib.request.urlopen(req, timeout=60))
assert result["model"] == "resnet50" and len(result["results"][0]) == 5, result
print("classify:", result["results"][0][0])
import tritonclient.grpc as grpcclient
client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
assert client.is_server_ready()
latent = grpcclient.InferInput("latent", [2, 100], "FP32")
latent.set_data_from_numpy(np.zeros((2, 100), np.float32))
image = client.infer("gan_generator", [latent], headers=auth).as_numpy("image")
assert image.shape == (2, 1, 28, 28), image.shape
print("v2 gRPC infer gan_generator:", image.shape)
PY
# sigterm_check.py sends no header of its own: with a token, run it with one added to each request.
"$BIN/python" - "$PORT" "$NAME" <<'PY'
import http.client, os, runpy, sys
token = os.environ.get("ZOOSERVE_API_TOKEN")
if token:
    plain = http.client.HTTPConnection.request
    def request(self, method, url, body=None, headers=None, **kw):
        return plain(self, method, url, body, {**(headers or {}), "Authorization": f"Bearer {token}"}, **kw)
    http.client.HTTPConnection.request = request
sys.argv = ["deploy/image/sigterm_check.py", *sys.argv[1:]]
runpy.run_path("deploy/image/sigterm_check.py", run_name="__main__")
PY
echo "image test passed"
