#!/usr/bin/env bash
# Run the CPU image as Kubernetes would (read-only root, /tmp writable, non-root, host network
# on loopback ports), wait for /readyz, call /classify and a v2 gRPC infer, then SIGTERM it
# under load: zero failed accepted requests.   IMAGE=localhost/zooserve:cpu deploy/image/test.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-localhost/zooserve:cpu}
BIN=${BIN:-.venv/bin}
PORT=${PORT:-3555}
GRPC_PORT=${GRPC_PORT:-8555}
NAME=zooserve-image-test
podman rm -f "$NAME" >/dev/null 2>&1 || true
trap 'podman rm -f "$NAME" >/dev/null 2>&1 || true' EXIT
echo "image size: $(podman image inspect "$IMAGE" --format '{{.Size}}') bytes"
start=$(date +%s.%N)
podman run -d --name "$NAME" --runtime runc --network host --read-only --tmpfs /tmp \
  --ulimit nofile=10000:10000 --ulimit nproc=4096:4096 -e ZOOSERVE_GRPC_PORT="$GRPC_PORT" -e ZOOSERVE_GRPC_HOST=127.0.0.1 \
  "$IMAGE" bentoml serve services.service:ZooServe --host 127.0.0.1 --port "$PORT" >/dev/null
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$PORT/readyz")" = 200 ] && break
  podman container exists "$NAME" || { echo "container exited"; exit 1; }
  sleep 0.2
done
echo "cold start to ready: $("$BIN/python" -c "print(round($(date +%s.%N) - $start, 1))") s"
curl -sf "127.0.0.1:$PORT/livez" | grep -q '"torch_imported": false'
"$BIN/python" - "$PORT" "$GRPC_PORT" <<'PY'
import base64, json, sys, urllib.request
import numpy as np
from zoo.vision import example_image
port, grpc_port = sys.argv[1], sys.argv[2]
body = json.dumps({"images": [base64.b64encode(example_image(500, 375)).decode()]}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/classify", body, {"Content-Type": "application/json"})
result = json.load(urllib.request.urlopen(req, timeout=60))
assert result["model"] == "resnet50" and len(result["results"][0]) == 5, result
print("classify:", result["results"][0][0])
import tritonclient.grpc as grpcclient
client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
assert client.is_server_ready()
latent = grpcclient.InferInput("latent", [2, 100], "FP32")
latent.set_data_from_numpy(np.zeros((2, 100), np.float32))
image = client.infer("gan_generator", [latent]).as_numpy("image")
assert image.shape == (2, 1, 28, 28), image.shape
print("v2 gRPC infer gan_generator:", image.shape)
PY
"$BIN/python" deploy/image/sigterm_check.py "$PORT" "$NAME"
echo "image test passed"
