#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests offline, every object against a schema.

  python deploy/validate_manifests.py --kube-version 1.29.0 rendered.yaml [more.yaml ...]

- Built-in kinds: kubernetes-validate's strict schemas for that Kubernetes version (the same
  check as `kubernetes-validate --strict`, through its Python API).
- CRD kinds (ServiceMonitor, PrometheusRule, InferenceService): the upstream CRD schemas vendored
  in deploy/schemas/ (see vendor_crds.py), made strict here: an object schema with `properties`
  and neither `additionalProperties` nor `x-kubernetes-preserve-unknown-fields` rejects unknown
  fields, `nullable` allows null.  Their metadata is checked as ObjectMeta by kubernetes-validate.
- An object of a kind with no schema at all is an error (kubernetes-validate only warns).

Exit status 0 when every object is valid, 1 otherwise; one line per object.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule_v1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice_v1beta1.json",
}


def strict(node: Any) -> Any:
    """A CRD structural schema as a strict JSON schema (unknown fields are errors)."""
    if isinstance(node, list):
        return [strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


_validators: dict[str, jsonschema.protocols.Validator] = {}


def crd_validator(filename: str) -> jsonschema.protocols.Validator:
    if filename not in _validators:
        schema = strict(json.loads((SCHEMAS / filename).read_text()))
        schema.pop("x-zooserve-source", None)
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
        _validators[filename] = cls(schema)
    return _validators[filename]


def validate_object(obj: dict[str, Any], kube_version: str) -> list[str]:
    """Error messages for one object (empty when valid)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRD_SCHEMAS:
        errors = [
            f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(crd_validator(CRD_SCHEMAS[key]).iter_errors(obj), key=lambda e: list(e.absolute_path))
        ]
        # ObjectMeta through a built-in kind that has nothing else required.
        meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": copy.deepcopy(obj.get("metadata") or {})}
        try:
            kubernetes_validate.validate(meta, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"metadata: {exc.message}")
        return errors
    try:
        kubernetes_validate.validate(obj, kube_version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"no schema: {exc.message}"]
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.absolute_path)) or '(root)'}: {exc.message}"]
    return []


def validate_files(paths: list[Path], kube_version: str) -> tuple[int, list[str]]:
    """(objects checked, error lines)."""
    count, problems = 0, []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            count += 1
            name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            for err in validate_object(doc, kube_version):
                problems.append(f"{path}: {name}: {err}")
    return count, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kube-version", "-k", required=True)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    count, problems = validate_files(args.files, args.kube_version)
    for line in problems:
        print(f"ERROR {line}")
    kinds = sorted({d["kind"] for p in args.files for d in yaml.safe_load_all(p.read_text()) if d})
    status = "FAILED" if problems else "OK"
    print(
        f"{status}: {count} objects ({', '.join(kinds)}) against Kubernetes {args.kube_version}"
        f" + vendored CRD schemas, {len(problems)} errors"
    )
    return 1 if problems or count == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
