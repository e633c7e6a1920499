#!/usr/bin/env bash
# A minimal Debian 12 base with Python 3.11, made locally (no image registry is reachable):
# debootstrap a rootfs and import it into podman as $BASE (default localhost/zooserve-base:bookworm).
set -euo pipefail
BASE=${BASE:-localhost/zooserve-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if podman image exists "$BASE"; then echo "$BASE exists"; exit 0; fi
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
root=$(mktemp -d /tmp/zooserve-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
# python3-venv brings pip for the build stage; tini is PID 1 so SIGTERM reaches the server
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,tini bookworm "$root" "$MIRROR" >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
tar -C "$root" -c . | podman import --change 'CMD ["python3"]' - "$BASE" >/dev/null
echo "built $BASE: $(podman image inspect "$BASE" --format '{{.Size}}') bytes"
