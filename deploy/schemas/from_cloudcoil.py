"""Regenerate the KEDA and Prometheus-operator CRD schemas in this folder from the cloudcoil models.

The cloudcoil-models-* wheels (PyPI) are pydantic models generated from the upstream CRDs; their
JSON Schema, made strict here as kubeconform's ``-strict`` does (an object that lists its properties
refuses others), is what the manifest test validates against. Not run by the tests: run it by hand in
a throwaway venv after ``pip install cloudcoil-models-keda cloudcoil-models-prometheus-operator``,
then update SOURCES.md.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
MODELS = {
    ("keda.sh", "v1alpha1", "ScaledObject"): "cloudcoil.models.keda.v1alpha1",
    ("keda.sh", "v1alpha1", "TriggerAuthentication"): "cloudcoil.models.keda.v1alpha1",
    ("monitoring.coreos.com", "v1", "ServiceMonitor"): "cloudcoil.models.prometheus_operator.v1",
    ("monitoring.coreos.com", "v1", "PrometheusRule"): "cloudcoil.models.prometheus_operator.v1",
    ("monitoring.coreos.com", "v1", "PodMonitor"): "cloudcoil.models.prometheus_operator.v1",
}


def strict(node: Any) -> Any:
    """Close every object that lists its properties, unless it keeps unknown fields on purpose."""
    if isinstance(node, dict):
        out = {k: strict(v) for k, v in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def main() -> None:
    for (group, version, kind), module in MODELS.items():
        model = getattr(importlib.import_module(module), kind)
        schema = strict(model.model_json_schema(by_alias=True))
        # apiVersion and kind are plain strings in the models: pin them, as the CRD does.
        schema["properties"]["apiVersion"] = {"const": f"{group}/{version}"}
        schema["properties"]["kind"] = {"const": kind}
        schema.setdefault("required", [])
        for field in ("apiVersion", "kind", "metadata", "spec"):
            if field in schema["properties"] and field not in schema["required"]:
                schema["required"].append(field)
        out = HERE / group / f"{kind.lower()}_{version}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        sys.stdout.write(f"{out.relative_to(HERE)}: {len(out.read_text())} characters\n")


if __name__ == "__main__":
    main()
