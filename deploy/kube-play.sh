#!/usr/bin/env bash
# Run the chart's rendered Deployment with `podman kube play`: the closest executable check of
# the manifests without a Kubernetes cluster.
#
#   deploy/kube-play.sh IMAGE [extra helm args...]
#   deploy/kube-play.sh localhost/zooserve:cpu --set models='{resnet18}'
#
# IMAGE must already be in podman's image store (podman build / podman load -i image.tar).
# What it checks, on 127.0.0.1 only:
#   - the pod starts with the chart's security context (uid 10001, read-only root filesystem,
#     writable /tmp and metrics dir), env and ConfigMap mount;
#   - /livez answers, then /readyz turns 200 within the startup probe's window;
#   - /metrics carries every metric the alerts, dashboard and HPA use (tests/deploy_queries.py;
#     the GPU-only ones only when device is cuda);
#   - gRPC grpc.health.v1 answers SERVING on the grpc port (needs grpcio-health-checking in the
#     venv; a plain TCP connect otherwise);
#   - on `podman stop` the server exits on SIGTERM within terminationGracePeriodSeconds
#     instead of being killed.
# Then `podman kube down`, unless KEEP=1.
#
# What podman does not do, and how this script deals with it: kubelet probes need systemd
# timers here, so they are dropped and this script polls the endpoints itself; `ports:` are
# published with hostPort on 127.0.0.1 (HTTP_HOST_PORT, GRPC_HOST_PORT) through slirp4netns;
# Service, HPA, PDB, NetworkPolicy and ServiceMonitor are not rendered (podman ignores them).
# Settings for this host (crun and the default ulimits fail here; see
# shared/reading/offline-tooling.md): runc and lower ulimits through CONTAINERS_CONF, unless
# the caller sets CONTAINERS_CONF.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi
IMAGE="$1"; shift

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/deploy/helm/zooserve"
WORK="${KUBE_PLAY_DIR:-$ROOT/build/kube-play}"
HTTP_HOST_PORT="${HTTP_HOST_PORT:-13000}"
GRPC_HOST_PORT="${GRPC_HOST_PORT:-18001}"
RELEASE="${RELEASE:-zooserve-kubeplay}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3

command -v podman >/dev/null || { echo "kube-play: podman is missing (apt-get install podman slirp4netns runc)" >&2; exit 1; }
"$ROOT/deploy/fetch-tools.sh"
HELM="$ROOT/build/tools/bin/helm"
export HELM_CACHE_HOME="$ROOT/build/tools/helm-home/cache" HELM_CONFIG_HOME="$ROOT/build/tools/helm-home/config" \
       HELM_DATA_HOME="$ROOT/build/tools/helm-home/data"
mkdir -p "$WORK"

if [[ -z "${CONTAINERS_CONF:-}" ]]; then
  cat >"$WORK/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=10000:10000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  export CONTAINERS_CONF="$WORK/containers.conf"
fi
podman image exists "$IMAGE" || { echo "kube-play: image $IMAGE is not in podman's store (podman images)" >&2; exit 1; }

# --- render: the Deployment and its ConfigMap, adapted for podman ------------------------------
"$HELM" template "$RELEASE" "$CHART" --namespace default \
  --show-only templates/deployment.yaml --show-only templates/configmap.yaml "$@" >"$WORK/rendered.yaml"
"$PYTHON" - "$WORK" "$IMAGE" "$HTTP_HOST_PORT" "$GRPC_HOST_PORT" <<'EOF'
import json, sys, yaml
work, image, http_host, grpc_host = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
docs = [d for d in yaml.safe_load_all(open(f"{work}/rendered.yaml")) if d]
(dep,) = [d for d in docs if d["kind"] == "Deployment"]
cms = [d for d in docs if d["kind"] == "ConfigMap"]
dep["spec"]["replicas"] = 1
pod = dep["spec"]["template"]["spec"]
(ctr,) = pod["containers"]
ctr["image"] = image
ctr["imagePullPolicy"] = "Never"
host = {"http": http_host, "grpc": grpc_host}
for port in ctr["ports"]:
    port["hostPort"] = host[port["name"]]
    port["hostIP"] = "127.0.0.1"
startup = ctr.get("startupProbe") or {}
startup_window = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
    ctr.pop(probe, None)
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
def quantity(q):
    q = str(q)
    for unit, mult in UNITS.items():
        if q.endswith(unit):
            return float(q[: -len(unit)]) * mult
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)
lim = (ctr.get("resources") or {}).get("limits") or {}
period = 100000
mem = int(quantity(lim["memory"])) if "memory" in lim else 0
cpu = int(quantity(lim["cpu"]) * period) if "cpu" in lim else 0
env = {e["name"]: e.get("value") for e in ctr.get("env", [])}
facts = {
    "container_ports": {p["name"]: p["containerPort"] for p in ctr["ports"]},
    "grace": pod.get("terminationGracePeriodSeconds", 30),
    "startup_window": startup_window,
    "limits": f"{mem} {cpu} {period if cpu else 0}",
    "device": env.get("ZOOSERVE_DEVICE", "cpu"),
    "uid": (ctr.get("securityContext") or {}).get("runAsUser") or pod["securityContext"].get("runAsUser"),
    "mounts": [m["mountPath"] for m in ctr.get("volumeMounts", []) if not m.get("readOnly")],
    "pod": dep["metadata"]["name"],
}
yaml.safe_dump(dep, open(f"{work}/deployment.yaml", "w"), sort_keys=False)
yaml.safe_dump_all(cms, open(f"{work}/configmap.yaml", "w"), sort_keys=False)
json.dump(facts, open(f"{work}/facts.json", "w"))
EOF
fact() { "$PYTHON" -c "import json,sys; print(json.load(open('$WORK/facts.json'))[sys.argv[1]])" "$1"; }
GRACE="$(fact grace)"; STARTUP="$(fact startup_window)"; DEVICE="$(fact device)"; UID_WANT="$(fact uid)"
MOUNTS="$("$PYTHON" -c "import json; print(' '.join(json.load(open('$WORK/facts.json'))['mounts']))")"

failures=0
pass() { printf 'PASS  %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; failures=$((failures + 1)); }
down() {
  if [[ "${KEEP:-0}" != 1 ]]; then
    podman kube down "$WORK/deployment.yaml" >/dev/null 2>&1 || true
  fi
}
trap down EXIT

# --- play ---------------------------------------------------------------------------------------
podman kube down "$WORK/deployment.yaml" >/dev/null 2>&1 || true
if ! podman kube play --network slirp4netns --configmap "$WORK/configmap.yaml" "$WORK/deployment.yaml" \
     >"$WORK/play.log" 2>&1; then
  fail "podman kube play"; sed 's/^/      /' "$WORK/play.log"; exit 1
fi
pass "podman kube play (Deployment $(fact pod), image $IMAGE)"
CTR="$(podman ps -a --format '{{.Names}}' | grep -E -- "-zooserve$" | grep -F -- "$(fact pod)" | head -1)"
[[ -n "$CTR" ]] || { fail "container of $(fact pod) not found"; podman ps -a; exit 1; }

http_code() { curl -s -o "$WORK/body" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$HTTP_HOST_PORT$1" || true; }
wait_for() {  # PATH SECONDS
  local deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    [[ "$(http_code "$1")" == 200 ]] && return 0
    [[ "$(podman inspect -f '{{.State.Running}}' "$CTR" 2>/dev/null)" == true ]] || return 1
    sleep 2
  done
  return 1
}
if wait_for /livez 60; then pass "/livez 200"; else fail "/livez did not answer 200 within 60 s"; fi
t0=$SECONDS
if wait_for /readyz "$STARTUP"; then
  pass "/readyz 200 after $((SECONDS - t0)) s (startup window ${STARTUP} s)"
else
  fail "/readyz not 200 within ${STARTUP} s: $(head -c 600 "$WORK/body" 2>/dev/null)"
fi

# --- security context, env, mounts ---------------------------------------------------------------
exec_py() { podman exec "$CTR" python3 -c "$1" 2>&1 || podman exec "$CTR" sh -c "$2" 2>&1; }
uid="$(exec_py 'import os; print(os.getuid())' 'id -u' | tail -1)"
[[ "$uid" == "$UID_WANT" ]] && pass "runs as uid $uid" || fail "runs as uid '$uid', want $UID_WANT"
can_write() {  # DIR: create and remove a file there, with sh or with python3
  podman exec "$CTR" sh -c "touch '$1/.kube-play-probe' && rm -f '$1/.kube-play-probe'" >/dev/null 2>&1 \
    || podman exec "$CTR" python3 -c "import os; open('$1/.kube-play-probe', 'w'); os.remove('$1/.kube-play-probe')" \
       >/dev/null 2>&1
}
writable=0
for dir in $MOUNTS; do
  if can_write "$dir"; then pass "$dir is writable"; writable=1; else fail "$dir is not writable"; fi
done
if can_write /; then
  fail "root filesystem is writable"
elif ((writable)); then
  pass "root filesystem is read-only"
else
  fail "root filesystem: inconclusive (no sh or python3 in the image could write anywhere)"
fi
limits="$(podman inspect -f '{{.HostConfig.Memory}} {{.HostConfig.CpuQuota}} {{.HostConfig.CpuPeriod}}' "$CTR")"
if [[ "$limits" == "$(fact limits)" ]]; then
  pass "resource limits applied (memory bytes, CPU quota/period: $limits)"
else
  fail "resource limits: podman has '$limits', the chart asks '$(fact limits)'"
fi
podman inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$CTR" >"$WORK/env.txt"
missing_env="$("$PYTHON" - "$WORK" <<'EOF'
import sys, yaml
work = sys.argv[1]
dep = yaml.safe_load(open(f"{work}/deployment.yaml"))
want = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e}
have = dict(line.split("=", 1) for line in open(f"{work}/env.txt").read().splitlines() if "=" in line)
print(" ".join(f"{k}={v!r}(got {have.get(k)!r})" for k, v in want.items() if have.get(k) != v))
EOF
)"
[[ -z "$missing_env" ]] && pass "the chart's env reached the container" || fail "env differs: $missing_env"
cfg="$(grep -m1 '^ZOOSERVE_CONFIG=' "$WORK/env.txt" | cut -d= -f2- || true)"
rm -f "$WORK/config-in-pod.yaml"
if [[ -n "$cfg" ]] && podman cp "$CTR:$cfg" "$WORK/config-in-pod.yaml" >/dev/null 2>&1 \
   && "$PYTHON" - "$WORK" <<'EOF'
import sys, yaml
work = sys.argv[1]
(cm,) = [d for d in yaml.safe_load_all(open(f"{work}/configmap.yaml")) if d and "config.yaml" in d.get("data", {})]
assert open(f"{work}/config-in-pod.yaml").read() == cm["data"]["config.yaml"]
EOF
then
  pass "ZOOSERVE_CONFIG=$cfg holds the ConfigMap's config.yaml"
else
  fail "ZOOSERVE_CONFIG (${cfg:-unset}) is not the ConfigMap's config.yaml"
fi

# --- metrics --------------------------------------------------------------------------------------
if [[ "$(http_code /metrics)" == 200 ]]; then
  cp "$WORK/body" "$WORK/metrics.txt"
  missing=()
  while read -r name; do
    [[ "$DEVICE" != cuda && "$name" == zooserve_gpu_* ]] && continue
    grep -qE "^# TYPE $name " "$WORK/metrics.txt" || missing+=("$name")
  done < <("$PYTHON" "$ROOT/tests/deploy_queries.py" names)
  if ((${#missing[@]})); then fail "/metrics lacks ${missing[*]}"; else pass "/metrics has every metric the alerts, dashboard and HPA use"; fi
else
  fail "/metrics did not answer 200"
fi

# --- gRPC -----------------------------------------------------------------------------------------
if "$PYTHON" -c 'import grpc_health.v1' 2>/dev/null; then
  if status="$("$PYTHON" - "$GRPC_HOST_PORT" 2>&1 <<'EOF'
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
with grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}") as ch:
    try:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError as exc:
        sys.exit(f"{exc.code().name}: {exc.details()}")
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
EOF
  )" && [[ "$status" == SERVING ]]; then
    pass "gRPC grpc.health.v1 Check: SERVING"
  else
    fail "gRPC health check on 127.0.0.1:$GRPC_HOST_PORT: ${status:-no answer}"
  fi
elif (exec 3<>"/dev/tcp/127.0.0.1/$GRPC_HOST_PORT") 2>/dev/null; then
  pass "gRPC port accepts TCP connections (no grpcio-health-checking for a health check)"
else
  fail "gRPC port 127.0.0.1:$GRPC_HOST_PORT refuses connections"
fi

# --- graceful shutdown -------------------------------------------------------------------------
t0=$SECONDS
podman stop --time "$GRACE" "$CTR" >/dev/null 2>&1 || true
took=$((SECONDS - t0))
code="$(podman inspect -f '{{.State.ExitCode}}' "$CTR" 2>/dev/null || echo '?')"
if [[ "$code" == 137 ]]; then
  fail "SIGTERM ignored: killed after ${took} s (grace ${GRACE} s); handle SIGTERM or run with an init"
else
  pass "stopped on SIGTERM in ${took} s (exit $code, grace ${GRACE} s)"
fi
podman logs "$CTR" >"$WORK/container.log" 2>&1 || true

echo "logs and rendered files: $WORK"
if ((failures)); then echo "kube-play: $failures check(s) FAILED"; exit 1; fi
echo "kube-play: all checks passed"
