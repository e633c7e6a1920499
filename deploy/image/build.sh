#!/usr/bin/env bash
# Build the CPU serving image with buildah/podman, offline: wheels from the project's pinned
# constraints (built on the host), the default zoo's ONNX artifacts from $BENTOML_HOME.
#   IMAGE=localhost/zooserve:cpu BASE=localhost/zooserve-base:bookworm deploy/image/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-localhost/zooserve:cpu}
BASE=${BASE:-localhost/zooserve-base:bookworm}
BIN=${BIN:-.venv/bin}
HOME_STORE=${BENTOML_HOME:-$HOME/bentoml}
ctx=build/image-context
rm -rf "$ctx" && mkdir -p "$ctx/models"
BASE=$BASE deploy/image/base.sh
"$BIN/pip" wheel --quiet --wheel-dir "$ctx/wheels" -c constraints.txt . 2>&1 | grep -v "^WARNING: Location" || true
# the default zoo's latest ONNX artifact of every model, and nothing else of the store
for name in $("$BIN/zoo" list | awk '{print $1}'); do
  store="${name//_/-}-onnx"
  src="$HOME_STORE/models/$store"
  [ -f "$src/latest" ] || { echo "no $store in $HOME_STORE: run 'make export' first" >&2; exit 1; }
  version=$(cat "$src/latest")
  mkdir -p "$ctx/models/$store"
  cp -r "$src/$version" "$ctx/models/$store/"
  cp "$src/latest" "$ctx/models/$store/"
done
cp deploy/Dockerfile "$ctx/Dockerfile"
buildah bud --isolation chroot --runtime runc --ulimit nofile=10000:10000 --network host \
  --build-arg BASE_IMAGE="$BASE" --build-arg VERSION="$(grep -m1 '^version' pyproject.toml | cut -d'"' -f2)" \
  --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --layers=false -t "$IMAGE" "$ctx" >/dev/null
echo "built $IMAGE: $(podman image inspect "$IMAGE" --format '{{.Size}}') bytes"
