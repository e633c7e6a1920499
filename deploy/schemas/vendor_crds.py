#!/usr/bin/env python3
"""Vendor the OpenAPI schemas of the CRDs the deploy/ manifests use, for offline validation.

kubernetes-validate ships only built-in kinds, and no CRD schema can be fetched at check time,
so the upstream CRDs' `openAPIV3Schema` are stored here as JSON (descriptions stripped):

  servicemonitor_v1.json           prometheus-operator v0.93.0 (commit 6adcebc5076c)
                                   example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
  prometheusrule_v1.json           same commit, .../monitoring.coreos.com_prometheusrules.yaml
  inferenceservice_v1beta1.json    kserve/kserve commit aaac4e294dae (2026-08)
                                   config/crd/full/serving.kserve.io_inferenceservices.yaml,
                                   pruned to spec.predictor: 693 kB -> 133 kB.  Every property
                                   name is kept at every level; the subtrees zooserve does not use
                                   (other components, model-format specs, workerSpec, status) are
                                   replaced by {"type": "object", "x-zooserve-pruned": true}.

deploy/validate_manifests.py validates against them strictly (unknown fields are errors, as with
kubectl's --validate=strict).  To refresh, download the same files of a newer release and run

  python3 deploy/schemas/vendor_crds.py servicemonitors.yaml prometheusrules.yaml inferenceservices.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
PRUNED = {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "x-zooserve-pruned": True}
# InferenceService: what zooserve's manifest does not use.
ISVC_PRUNE_SPEC = ("canary", "explainer", "transformer")
ISVC_PRUNE_PREDICTOR = (
    "huggingface",
    "lightgbm",
    "model",
    "onnx",
    "paddle",
    "pmml",
    "pytorch",
    "sklearn",
    "tensorflow",
    "triton",
    "xgboost",
    "workerSpec",
)


def strip_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def vendor(crd_path: Path) -> Path:
    crd = yaml.safe_load(crd_path.read_text())
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema = strip_descriptions(version["schema"]["openAPIV3Schema"])
    if kind == "InferenceService":
        spec = schema["properties"]["spec"]["properties"]
        for name in ISVC_PRUNE_SPEC:
            spec[name] = dict(PRUNED)
        predictor = spec["predictor"]["properties"]
        for name in ISVC_PRUNE_PREDICTOR:
            predictor[name] = dict(PRUNED)
        schema["properties"]["status"] = dict(PRUNED)
    schema["x-zooserve-source"] = {
        "apiVersion": f"{group}/{version['name']}",
        "kind": kind,
        "crd": crd["metadata"]["name"],
        "annotations": crd["metadata"].get("annotations", {}),
    }
    out = HERE / f"{kind.lower()}_{version['name']}.json"
    out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        print(vendor(Path(arg)))
