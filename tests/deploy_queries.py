"""The PromQL that deploy/ ships, and the metric names it reads.

Sources (all under deploy/):
- helm/zooserve/files/prometheus/rules.yaml: recording and alerting rules (the PrometheusRule);
- prometheus-adapter/values.yaml: the HPA's custom-metric rules (seriesQuery and metricsQuery);
- helm/zooserve/files/grafana/zooserve-dashboard.json: panel queries and template variables.

`used_metric_names()` is what a test against a live server's /metrics checks: every name must
be scraped.  Histogram series are reduced to their base name (`x_bucket`, `x_sum`, `x_count` ->
`x`), the name under which a scrape declares `# TYPE x histogram`.  Recording-rule names
(`level:metric:operation`, with colons) are not scraped and are left out; the metrics they are
computed from are in.  GPU_ONLY_METRICS appear only in a GPU server's scrape.

The label values the queries rely on are here too: the failure reasons by class (server
faults, shedding, client faults) and the buckets of zooserve_batch_size_rows.

Also a small CLI for deploy/check-chart.sh:
  python tests/deploy_queries.py names                 # one used metric name a line
  python tests/deploy_queries.py promql-rules OUT.yaml # every query as a recording rule, for
                                                       # `promtool check rules` (parses PromQL)
  python tests/deploy_queries.py adapter-rules OUT.yaml  # the adapter queries, expanded as the
                                                       # adapter does: deploy/prometheus/adapter_rules.yaml,
                                                       # the committed rule file of adapter_test.yaml
  python tests/deploy_queries.py adapter-rules --check deploy/prometheus/adapter_rules.yaml
                                                       # exit 1 (and a diff) when it drifted
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "zooserve"
RULES_FILE = CHART / "files" / "prometheus" / "rules.yaml"
DASHBOARD_FILE = CHART / "files" / "grafana" / "zooserve-dashboard.json"
ADAPTER_FILE = DEPLOY / "prometheus-adapter" / "values.yaml"
# Generated from ADAPTER_FILE (`adapter-rules`), committed so that
# `promtool test rules deploy/prometheus/adapter_test.yaml` runs on its own; check-chart.sh fails
# when the committed file differs from what would be generated.
ADAPTER_RULES_FILE = DEPLOY / "prometheus" / "adapter_rules.yaml"
ADAPTER_RULES_COMMAND = "python tests/deploy_queries.py adapter-rules deploy/prometheus/adapter_rules.yaml"

# zooserve_request_failure_total{reason}: every value, by class.  A failure before a model is
# resolved (unknown model, malformed body, 413 by header) has model="" version="" backend="".
SERVER_FAULT_REASONS = ("timeout", "error")  # the error ratio's numerator
SHED_REASONS = ("rejected",)  # work refused: queue full (429), model not ready or stopping (503)
CLIENT_FAULT_REASONS = ("bad_input", "not_found", "too_large", "unsupported_media", "unauthenticated", "cancelled")
FAILURE_REASONS = SHED_REASONS + SERVER_FAULT_REASONS + CLIENT_FAULT_REASONS
# zooserve_batch_size_rows: bins centred on integer sizes (le = n + 0.5), batches up to 256 rows.
BATCH_SIZE_BUCKETS = (0.5, 1.5, 2.5, 3.5, 4.5, 7.5, 8.5, 15.5, 16.5, 31.5, 32.5, 63.5, 64.5, 127.5, 128.5, 255.5, 256.5)

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Exposed only by pods that run on a GPU (NVML); a CPU server's /metrics lacks them.
GPU_ONLY_METRICS = frozenset(
    {"zooserve_gpu_utilization_ratio", "zooserve_gpu_memory_used_bytes", "zooserve_gpu_memory_total_bytes"}
)
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
    "start",
    "end",
}
# Grafana variables -> values that keep the query valid PromQL.
_GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}


# --- where the queries are -------------------------------------------------------------------
def rule_queries() -> list[tuple[str, str]]:
    """(rule name, expr) of every recording and alerting rule."""
    data = yaml.safe_load(RULES_FILE.read_text())
    return [(rule.get("record") or rule["alert"], rule["expr"]) for group in data["groups"] for rule in group["rules"]]


def recording_rule_names() -> set[str]:
    data = yaml.safe_load(RULES_FILE.read_text())
    return {r["record"] for g in data["groups"] for r in g["rules"] if "record" in r}


def adapter_rules() -> list[dict[str, Any]]:
    return yaml.safe_load(ADAPTER_FILE.read_text())["rules"]["custom"]


def expand_adapter_query(rule: dict[str, Any], label_matchers: str, group_by: str) -> str:
    """metricsQuery with the adapter's Go-template fields filled in, as the adapter does."""
    series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"]).group(1)
    return (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", label_matchers)
        .replace("<<.GroupBy>>", group_by)
        .strip()
    )


def adapter_queries() -> list[tuple[str, str]]:
    """(exposed custom metric name, expanded metricsQuery) plus each seriesQuery."""
    out = []
    for rule in adapter_rules():
        name = rule["name"]["as"]
        out.append((name, expand_adapter_query(rule, 'namespace="ml",pod=~"zooserve-.*"', "pod")))
        out.append((f"{name} (seriesQuery)", rule["seriesQuery"]))
    return out


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables so the query parses: $__rate_interval -> 5m, $var -> .*"""
    for var, value in _GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?", ".*", expr)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, Grafana variables replaced."""
    dash = json.loads(DASHBOARD_FILE.read_text())
    return [
        (panel.get("title", "?"), grafana_to_promql(target["expr"]))
        for panel in _panels(dash["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def dashboard_variable_selectors() -> list[tuple[str, str]]:
    """(variable, series selector) of label_values(<selector>, label) variable queries."""
    dash = json.loads(DASHBOARD_FILE.read_text())
    out = []
    for var in dash.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else (query or "")
        m = re.match(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", query, re.S)
        if m:
            out.append((var["name"], grafana_to_promql(m.group(1))))
    return out


def all_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every query deploy/ ships."""
    return (
        [(f"rule {n}", q) for n, q in rule_queries()]
        + [(f"adapter {n}", q) for n, q in adapter_queries()]
        + [(f"dashboard {n}", q) for n, q in dashboard_queries()]
        + [(f"dashboard variable {n}", q) for n, q in dashboard_variable_selectors()]
    )


# --- metric names in PromQL ------------------------------------------------------------------
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords and labels left out)."""
    names = set(_NAME_MATCHER.findall(expr))
    text = _BRACES.sub(" ", _STRING.sub('""', expr))
    text = _GROUPING.sub(" ", _BRACKETS.sub(" ", text))
    for token in _IDENT.findall(text):
        if token.lower() not in _KEYWORDS:
            names.add(token)
    return names


def base_name(name: str) -> str:
    """x_bucket / x_sum / x_count -> x (zooserve's counters all end in _total)."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def used_metric_names() -> set[str]:
    """Every scraped metric name the alert rules, recording rules, HPA adapter rules and
    dashboard queries use, histograms by their base name."""
    names: set[str] = set()
    for _, query in all_queries():
        names |= metric_names(query)
    return {base_name(n) for n in names if ":" not in n}


# --- CLI ---------------------------------------------------------------------------------------
def _write_rules(path: Path, queries: list[tuple[str, str]], prefix: str) -> None:
    rules = [
        {"record": f"{prefix}:{re.sub(r'[^A-Za-z0-9_]+', '_', where).strip('_')}:{i}", "expr": q}
        for i, (where, q) in enumerate(queries)
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": prefix, "rules": rules}]}, sort_keys=False))


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the queries) as literal blocks, as a person would write them."""


_BlockDumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None),
)


def adapter_rules_text() -> str:
    """The rule file adapter_test.yaml reads: each metricsQuery expanded for pods zooserve-a and
    zooserve-b of namespace ml, grouped by pod, recorded under the custom metric's name."""
    rules = [
        {
            "record": r["name"]["as"],
            "expr": expand_adapter_query(r, 'namespace="ml",pod=~"zooserve-a|zooserve-b"', "pod"),
        }
        for r in adapter_rules()
    ]
    header = (
        "# GENERATED from deploy/prometheus-adapter/values.yaml: do not edit.  Regenerate with\n"
        f"#   {ADAPTER_RULES_COMMAND}\n"
        "# deploy/check-chart.sh fails when this file differs from what it would generate.\n"
    )
    return header + yaml.dump(
        {"groups": [{"name": "adapter", "rules": rules}]}, Dumper=_BlockDumper, sort_keys=False, width=120
    )


def adapter_rules_drift(path: Path = ADAPTER_RULES_FILE) -> str:
    """The empty string when `path` holds exactly what adapter_rules_text() generates, else a diff."""
    want = adapter_rules_text()
    have = path.read_text() if path.is_file() else ""
    if have == want:
        return ""
    diff = difflib.unified_diff(have.splitlines(True), want.splitlines(True), str(path), "generated")
    return "".join(diff) or f"{path} is missing"


def main(argv: list[str]) -> int:
    if argv[:1] == ["names"]:
        print("\n".join(sorted(used_metric_names())))
    elif len(argv) == 2 and argv[0] == "promql-rules":
        _write_rules(Path(argv[1]), all_queries(), "zooserve_check")
    elif len(argv) == 2 and argv[0] == "adapter-rules":
        Path(argv[1]).write_text(adapter_rules_text())
    elif len(argv) == 3 and argv[:2] == ["adapter-rules", "--check"]:
        drift = adapter_rules_drift(Path(argv[2]))
        if drift:
            print(f"{argv[2]} is not what {ADAPTER_FILE.relative_to(REPO)} generates; run: {ADAPTER_RULES_COMMAND}")
            print(drift)
            return 1
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
