"""The deployment, checked offline: Kubernetes overlays against the Kubernetes and operator schemas,
the topic and ACL manifests against the catalog, the compose file against the compose spec, the
Dockerfile with hadolint. Needs kubectl (it renders the overlays) and no cluster.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import promql_parser
import pytest
import yaml

from gxami_contracts.topics import CATALOG, READ_JOBS
from gxcore.profiles.model import load_profile

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "production", "production-hpa")
SERVICES = ("collector", "ingest", "scheduler", "reports")


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


validate = _module(DEPLOY / "validate.py")
generate = _module(DEPLOY / "k8s" / "generate.py")


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(validate.render(DEPLOY / "k8s" / "overlays" / overlay))


def of_kind(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in rendered(overlay) if d["kind"] == kind}


def test_nothing_but_docs_and_the_generator_at_the_k8s_root() -> None:
    top = sorted(p.name for p in (DEPLOY / "k8s").iterdir())
    assert top == ["README.md", "base", "components", "generate.py", "overlays"]
    assert sorted(p.name for p in (DEPLOY / "k8s" / "overlays").iterdir()) == sorted(OVERLAYS)


def test_the_committed_topic_user_and_edge_manifests_are_what_the_generator_writes() -> None:
    for path, text in generate.outputs().items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is stale: run deploy/k8s/generate.py"
    assert generate.main(["--check"]) == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_every_object_matches_its_schema(overlay: str) -> None:
    assert validate.overlay_errors(DEPLOY / "k8s" / "overlays" / overlay, list(rendered(overlay))) == []
    kinds = {d["kind"] for d in rendered(overlay)}
    expected = {
        "Namespace", "ConfigMap", "Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Cluster", "Job",
        "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy",
        "ServiceMonitor", "PodMonitor", "PrometheusRule",
    }  # fmt: skip
    assert expected <= kinds
    scalers = {"ScaledObject", "TriggerAuthentication"}
    if overlay == "production-hpa":
        assert not kinds & scalers and set(of_kind(overlay, "HorizontalPodAutoscaler")) == {
            "gxami-collector",
            "gxami-ingest",
        }
    else:
        assert scalers <= kinds and "HorizontalPodAutoscaler" not in kinds
        assert set(of_kind(overlay, "ScaledObject")) == {"gxami-collector", "gxami-ingest"}
    assert set(of_kind(overlay, "Deployment")) == {f"gxami-{s}" for s in SERVICES}
    assert set(of_kind(overlay, "PodDisruptionBudget")) == {f"gxami-{s}" for s in SERVICES}
    assert all(d["metadata"].get("namespace") == "gxami" for d in rendered(overlay) if d["kind"] != "Namespace")


def test_the_validation_catches_what_it_is_there_to_catch() -> None:
    """Each mistake below must be found: a validator that passes everything proves nothing."""
    docs = rendered("production")

    def first(kind: str) -> dict[str, Any]:
        return copy.deepcopy(next(d for d in docs if d["kind"] == kind))

    def schema(doc: dict[str, Any]) -> list[str]:
        return list(validate.schema_errors(doc))

    deployment = first("Deployment")
    deployment["spec"]["replica"] = 3
    assert any("replica" in e for e in schema(deployment))
    kafka = first("Kafka")
    kafka["spec"]["kafka"]["listeners"][0]["authentification"] = {"type": "tls"}
    assert any("authentification" in e for e in schema(kafka))
    kafka = first("Kafka")
    kafka["spec"]["kafka"]["listeners"][0]["type"] = "public"
    assert schema(kafka)
    topic = first("KafkaTopic")
    topic["spec"]["partition"] = 3
    assert schema(topic)
    user = first("KafkaUser")
    user["spec"]["authorization"]["acls"][0]["operations"] = ["Steal"]
    assert schema(user)
    scaled = first("ScaledObject")
    scaled["spec"]["minReplicas"] = 1
    assert schema(scaled)
    monitor = first("ServiceMonitor")
    monitor["spec"]["endpoint"] = []
    assert schema(monitor)
    rule = first("PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["expression"] = "up"
    assert schema(rule)
    cluster = first("Cluster")
    cluster["spec"]["instance"] = 1
    assert schema(cluster)
    assert schema({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "x"}, "spec": {}})

    pods = first("Deployment")
    container = pods["spec"]["template"]["spec"]["containers"][0]
    del container["securityContext"]["readOnlyRootFilesystem"]
    container["env"] = [e for e in container["env"] if e["name"] != "GXAMI_INSTANCE"]
    del container["startupProbe"]
    errors = validate.policy_errors(pods)
    assert any("readOnlyRootFilesystem" in e for e in errors)
    assert any("GXAMI_INSTANCE" in e for e in errors)
    assert any("startupProbe" in e for e in errors)


def test_topics_carry_the_catalogs_partitions_retention_and_compaction() -> None:
    topics = of_kind("production", "KafkaTopic")
    for spec in CATALOG.values():
        t = topics[spec.name]["spec"]
        assert t["partitions"] == spec.partitions
        assert t["replicas"] == 3 and t["config"]["min.insync.replicas"] == "2"
        assert t["config"].get("cleanup.policy") == ("compact" if spec.compacted else None)
        assert t["config"].get("retention.ms") == (None if spec.retention_ms is None else str(spec.retention_ms))
    assert topics["ami.fleet"]["spec"]["config"]["cleanup.policy"] == "compact"
    # Dev has one broker: one replica each, the same partitions.
    dev = of_kind("dev", "KafkaTopic")
    assert set(dev) == set(CATALOG)
    assert all(t["spec"]["replicas"] == 1 and t["spec"]["config"]["min.insync.replicas"] == "1" for t in dev.values())
    assert of_kind("dev", "KafkaNodePool")["dual"]["spec"]["replicas"] == 1


def _grants(user: dict[str, Any]) -> dict[tuple[str, str, str], set[str]]:
    out: dict[tuple[str, str, str], set[str]] = {}
    for acl in user["spec"]["authorization"]["acls"]:
        r = acl["resource"]
        out.setdefault((r["type"], r["name"], r.get("patternType", "literal")), set()).update(acl["operations"])
    return out


def test_each_service_user_writes_and_reads_only_what_the_catalog_gives_it() -> None:
    users = of_kind("production", "KafkaUser")
    for service in SERVICES:
        user = users[f"gxami-{service}"]
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        grants = _grants(user)
        writes = {n for (t, n, p), ops in grants.items() if t == "topic" and "Write" in ops and p == "literal"}
        reads = {n for (t, n, _), ops in grants.items() if t == "topic" and "Read" in ops}
        assert writes == {s.name for s in CATALOG.values() if service in s.producers + s.planned_producers}
        assert reads == {s.name for s in CATALOG.values() if service in s.consumers + s.planned_consumers}
        assert all(not ops & {"All", "Create", "Delete", "Alter", "AlterConfigs"} for ops in grants.values())
        assert not any(t == "cluster" for t, _, _ in grants)
        prefixed = {(n, frozenset(ops)) for (t, n, p), ops in grants.items() if p == "prefix"}
        site_jobs = {(f"{READ_JOBS.name}.", frozenset({"Describe", "Write"}))} if service == "scheduler" else set()
        assert prefixed == {("ami.", frozenset({"Describe"}))} | site_jobs  # no prefix grants data access
    ingest_groups = {n for (t, n, _) in _grants(users["gxami-ingest"]) if t == "group"}
    assert ingest_groups == {"ingest", "ingest-events", "gxami-dlq"}
    assert {n for (t, n, _) in _grants(users["gxami-collector"]) if t == "group"} == {"collector"}
    keda = _grants(users["gxami-keda"])
    assert all(ops == {"Describe"} for ops in keda.values())


def test_an_edge_user_reads_only_its_own_sites_jobs(tmp_path: Path) -> None:
    users, topics = of_kind("production", "KafkaUser"), of_kind("production", "KafkaTopic")
    sites = generate.read_sites(DEPLOY / "k8s" / "overlays" / "production" / "edge-sites.txt")
    assert sites, "the example edge sites are gone: the test would check nothing"
    for site, auth in sites:
        user = users[f"edge-{site}"]
        assert user["spec"]["authentication"]["type"] == auth
        grants = _grants(user)
        reads = {n for (t, n, _), ops in grants.items() if t == "topic" and "Read" in ops}
        assert reads == {f"{READ_JOBS.name}.{site}"}
        assert {n for (t, n, _) in grants if t == "group"} == {f"collector.{site}"}
        assert {(n, frozenset(grants[t, n, p])) for t, n, p in grants if p == "prefix"} == {
            ("ami.", frozenset({"Describe"}))
        }
        assert topics[f"{READ_JOBS.name}.{site}"]["spec"]["partitions"] == READ_JOBS.partitions
    bad = tmp_path / "edge-sites.txt"
    bad.write_text("north kerberos\n")
    with pytest.raises(SystemExit, match="expected 'site"):
        generate.read_sites(bad)


def test_services_are_wired_to_kafka_database_profiles_and_their_pod_name() -> None:
    for overlay in OVERLAYS:
        config = of_kind(overlay, "ConfigMap")
        settings = next(c for n, c in config.items() if n == "gxami-config")["data"]
        assert settings["GXAMI_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert settings["GXAMI_KAFKA_CREATE_TOPICS"] == "false"
        profiles = next(n for n in config if n.startswith("gxami-profiles"))
        for name, deployment in of_kind(overlay, "Deployment").items():
            pod = deployment["spec"]["template"]["spec"]
            env = {e["name"]: e for e in pod["containers"][0]["env"]}
            assert env["GXAMI_KAFKA_SASL_USERNAME"]["value"] == name
            assert env["GXAMI_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "gxami-db-app", "key": "uri"}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert volumes["profiles"]["configMap"]["name"] == profiles
            assert volumes["kafka-password"]["secret"]["secretName"] == name  # Strimzi's Secret for the user
    # The migrations run once, in the Job, with the same image.
    job = of_kind("production", "Job")["gxami-migrate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["db", "migrate"] and job["image"].startswith("ghcr.io/gxami/gxami:")


def test_the_shipped_site_profiles_are_valid_profiles() -> None:
    files = sorted((DEPLOY / "k8s" / "base" / "profiles").glob("*.yaml"))
    assert files
    for path in files:
        assert load_profile(path).name == path.stem


def test_the_meter_network_parameter_reaches_the_network_policy_and_the_allow_list() -> None:
    params = yaml.safe_load((DEPLOY / "k8s" / "base" / "params.yaml").read_text())["data"]
    cidr = params["meterNetworkCIDR"]
    policy = of_kind("production", "NetworkPolicy")["gxami-collector-meters"]
    assert policy["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": cidr}}]
    collector = of_kind("production", "Deployment")["gxami-collector"]["spec"]["template"]["spec"]["containers"][0]
    allowed = {e["name"]: e.get("value") for e in collector["env"]}["GXAMI_ALLOWED_NETWORKS"]
    assert allowed == f"{cidr}:4059"
    assert "gxami-params" not in of_kind("production", "ConfigMap")  # local-config: not applied
    assert "default-deny" in of_kind("production", "NetworkPolicy")
    assert of_kind("production", "NetworkPolicy")["default-deny"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
    }


def test_no_secret_in_base_or_production_and_dev_secrets_come_from_files() -> None:
    assert not of_kind("production", "Secret")
    dev = of_kind("dev", "Secret")
    assert {n.rsplit("-", 1)[0] if n.startswith("gxami-meter-secrets-") else n for n in dev} == {
        "gxami-meter-secrets",
        "gxami-keda-kafka",
    }
    for doc in rendered("dev"):
        assert doc["kind"] != "Secret" or "stringData" not in doc  # generated from files, not literals
    readme = (DEPLOY / "k8s" / "overlays" / "production" / "README.md").read_text()
    for key in ("gxami-meter-secrets", "secrets.yaml", "gxami-keda-kafka", "username", "password"):
        assert key in readme


def _metric_names_in_code() -> set[str]:
    names: set[str] = set()
    for src in [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("libs/runtime/src/**/*.py")]:
        names.update(re.findall(r"\"(gxami_[a-z0-9_]+)\"", src.read_text()))
    return names


EXPORTER_METRICS = {"kafka_consumergroup_lag"}  # Strimzi's kafka-exporter (compose: kafka-exporter)


def _metrics_in(expr: str) -> set[str]:
    """The metric names an expression selects (it must parse as PromQL)."""
    names: list[str | None] = []
    tree = promql_parser.parse(expr)  # ValueError on a syntax error
    promql_parser.walk(tree, lambda n: names.append(n.name) if isinstance(n, promql_parser.VectorSelector) else None)
    return {n.removesuffix("_bucket") for n in names if n}


def test_alerts_and_the_dashboard_use_metrics_that_exist() -> None:
    known = _metric_names_in_code() | EXPORTER_METRICS
    rules = of_kind("production", "PrometheusRule")["gxami"]["spec"]["groups"]
    exprs = [r["expr"] for g in rules for r in g["rules"]]
    alerts = {r["alert"] for g in rules for r in g["rules"]}
    for needed in ("GxamiConsumerLagHigh", "GxamiMetersSilent", "GxamiReadFailureRateHigh", "GxamiDeadLettersGrowing"):
        assert needed in alerts
    assert "GxamiInvocationCounterStoreErrors" in alerts
    dashboard = yaml.safe_load((DEPLOY / "compose" / "grafana" / "dashboards" / "gxami.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set().union(*(_metrics_in(e) for e in exprs))
    assert {"kafka_consumergroup_lag", "gxami_ingest_readings_total", "gxami_collector_jobs_total"} <= used
    assert used <= known, f"not exported by any service or exporter: {sorted(used - known)}"
    with pytest.raises(ValueError, match="parenthesis"):
        _metrics_in("sum(rate(gxami_collector_jobs_total[5m])")
    # The compose stack's Prometheus gets the same alerts (generated).
    compose_rules = yaml.safe_load((DEPLOY / "compose" / "alerts.yml").read_text())["groups"]
    assert compose_rules == rules


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def test_the_compose_file_matches_the_compose_spec_and_catches_a_typo(tmp_path: Path) -> None:
    assert validate.compose_errors() == []
    broken = _compose()
    broken["services"]["kafka"]["healthcheck"]["retrys"] = 3
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    assert any("retrys" in e for e in validate.compose_errors(path))
    dangling = _compose()
    dangling["services"]["ingest"]["depends_on"] = {"kafak": {"condition": "service_healthy"}}
    dangling["services"]["ingest"]["volumes"] = ["spool:/var/lib/gxami"]
    path.write_text(yaml.safe_dump(dangling))
    errors = validate.compose_errors(path)
    assert any("undefined service kafak" in e for e in errors) and any("undeclared volume spool" in e for e in errors)


def test_compose_images_are_pinned_and_the_volumes_belong_to_the_service_user() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image and "latest" not in image, (name, image)
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:2.")
    init = services["volumes-init"]
    assert init["user"] == "0:0" and init["entrypoint"][:2] == ["chown", "10001:10001"]
    owned = set(init["entrypoint"][2:])
    for name, svc in services.items():
        if name == "volumes-init":
            continue
        for mount in svc.get("volumes", []):
            volume, target = mount.split(":")[:2]
            if volume in ("shared", "collector-state") and not mount.endswith(":ro"):
                assert target in owned, f"{name} writes {target}, which volumes-init does not hand to uid 10001"
                assert svc["depends_on"]["volumes-init"]["condition"] == "service_completed_successfully"
    assert {"prometheus", "grafana", "kafka-exporter"} <= set(services)


def test_the_dockerfile_passes_hadolint_and_the_service_stage_holds_no_dev_stack(tmp_path: Path) -> None:
    assert validate.hadolint_errors() == []
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install uv\n")
    assert validate.hadolint_errors(bad)  # unpinned image and package: hadolint does look
    text = (ROOT / "Dockerfile").read_text()
    stages = dict(re.findall(r"^FROM \S+ AS (\S+)\n(.*?)(?=^FROM |\Z)", text, flags=re.M | re.S))
    assert list(stages)[-1] == "service"  # the default target
    build = stages["build"]
    packages = set(re.findall(r"--package (\S+)", build))
    assert packages == {f"gxami-{s}" for s in SERVICES} | {"gxami-cli"}
    assert "--no-dev" in build and "--no-editable" in build
    assert "COPY --from=build /app/.venv" in stages["service"]
    assert "meterlab" not in stages["service"] and "uv " not in stages["service"]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+\.\d+-slim-\w+$", text, flags=re.M)


def _self_signed_ca(directory: Path) -> Path:
    """A throwaway CA certificate (PEM), standing in for Strimzi's cluster CA."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cluster-ca")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _settings_class(service: str) -> type[Any]:
    from gxami_collector.settings import CollectorSettings
    from gxami_ingest.settings import IngestSettings
    from gxami_reports.settings import ReportsSettings
    from gxami_scheduler.settings import SchedulerSettings

    classes: dict[str, type[Any]] = {
        "collector": CollectorSettings,
        "ingest": IngestSettings,
        "scheduler": SchedulerSettings,
        "reports": ReportsSettings,
    }
    return classes[service]


def _load(service: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in [n for n in os.environ if n.startswith("GXAMI_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return _settings_class(service)()


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_each_service_accepts_the_settings_the_manifests_give_it(
    overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real settings classes read what a pod gets: a wrong name or value would fail here, not at 3 a.m."""
    ca = _self_signed_ca(tmp_path)
    password = tmp_path / "password"
    password.write_text("not-a-real-password\n")
    mounted = {"/etc/gxami/kafka/password": str(password), "/etc/gxami/kafka-ca/ca.crt": str(ca)}
    config = next(c for n, c in of_kind(overlay, "ConfigMap").items() if n == "gxami-config")["data"]
    for name, deployment in of_kind(overlay, "Deployment").items():
        service = name.removeprefix("gxami-")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {k: mounted.get(v, v) for k, v in config.items()}
        env.update({e["name"]: mounted.get(e["value"], e["value"]) for e in container["env"] if "value" in e})
        env["GXAMI_INSTANCE"] = f"{name}-7d9f-abcde"  # what the downward API gives
        env["GXAMI_DATABASE_URL"] = "postgresql://gxami:pw@gxami-db-rw.gxami:5432/gxami"  # gxami-db-app's uri
        settings = _load(service, env, monkeypatch)
        assert settings.instance == env["GXAMI_INSTANCE"]
        assert settings.kafka_sasl_username == name and settings.kafka_security_protocol == "SASL_SSL"
        if service == "collector":
            assert [str(r) for r in settings.allowed_networks] == [env["GXAMI_ALLOWED_NETWORKS"]]
            assert str(settings.profiles_dir) == "/etc/gxami/profiles"
            assert str(settings.invocation_counters_file).startswith("/var/lib/gxami/")
        if service == "scheduler":
            assert [str(p) for p in settings.profile_dirs] == ["/etc/gxami/profiles"]


def test_each_compose_service_accepts_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    for name in SERVICES:
        svc = services[name]
        assert svc["command"] == [name]
        settings = _load(name, {k: str(v) for k, v in svc["environment"].items()}, monkeypatch)
        assert settings.instance == name and settings.kafka_bootstrap == "kafka:9092"
        if name == "collector":
            assert settings.allowed_networks == ["172.28.0.0/24:4100-4199"]
    subnet = _compose()["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert services["collector"]["environment"]["GXAMI_ALLOWED_NETWORKS"].startswith(subnet + ":")


def test_the_external_secret_example_fills_the_secrets_the_readme_asks_for() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s/overlays/production/external-secret.example.yaml").read_text()))
    assert {d["spec"]["target"]["name"] for d in docs} == {"gxami-meter-secrets", "gxami-keda-kafka"}
    keys = {d["spec"]["target"]["name"]: {x["secretKey"] for x in d["spec"]["data"]} for d in docs}
    assert keys["gxami-meter-secrets"] == {"secrets.yaml"}


# Set by the manifests ahead of the services: names reserved for settings the lead adds (README
# "Kubernetes"); until then the services ignore them.
PENDING_SETTINGS: set[str] = set()  # settings the manifests set before a service reads them: none now


def test_every_gxami_variable_the_manifests_set_is_a_setting_of_some_service() -> None:
    known = {f"GXAMI_{f.upper()}" for s in SERVICES for f in _settings_class(s).model_fields}
    set_here: set[str] = set()
    for overlay in OVERLAYS:
        set_here |= {k for c in of_kind(overlay, "ConfigMap").values() for k in c.get("data", {})}
        for workload in [*of_kind(overlay, "Deployment").values(), *of_kind(overlay, "Job").values()]:
            for c in workload["spec"]["template"]["spec"]["containers"]:
                set_here |= {e["name"] for e in c.get("env", [])}
    for svc in _compose()["services"].values():
        set_here |= set(svc.get("environment", {}))
    gxami = {n for n in set_here if n.startswith("GXAMI_")}
    assert {"GXAMI_INSTANCE", "GXAMI_KAFKA_SASL_PASSWORD_FILE", "GXAMI_PROFILES_DIR"} <= gxami
    assert gxami - known <= PENDING_SETTINGS, (
        f"misspelt or unknown settings: {sorted(gxami - known - PENDING_SETTINGS)}"
    )


# Secrets the manifests use that no overlay renders: made by the operators (Strimzi, CloudNativePG)
# or by the person installing (overlays/production/README.md).
OPERATOR_SECRETS = {"gxami-db-app", "gxami-cluster-ca-cert"} | {f"gxami-{s}" for s in SERVICES}
YOUR_SECRETS = {"gxami-meter-secrets", "gxami-keda-kafka"}


def _secret_refs(node: Any) -> set[str]:
    """Every Secret name a pod spec or a CRD refers to (secretName, secretKeyRef, secretTargetRef)."""
    found: set[str] = set()
    if isinstance(node, dict):
        if "secretName" in node:
            found.add(node["secretName"])
        for key in ("secretKeyRef", "secretRef"):
            if isinstance(node.get(key), dict) and "name" in node[key]:
                found.add(node[key]["name"])
        for v in node.values():
            found |= _secret_refs(v)
    elif isinstance(node, list):
        for v in node:
            found |= _secret_refs(v)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_selector_and_reference_points_at_something_that_exists(overlay: str) -> None:
    deployments = of_kind(overlay, "Deployment")
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}

    def selects(selector: dict[str, str]) -> set[str]:
        return {n for n, labels in pod_labels.items() if selector.items() <= labels.items()}

    for name, d in deployments.items():
        assert selects(d["spec"]["selector"]["matchLabels"]) == {name}
    for name, svc in of_kind(overlay, "Service").items():
        assert selects(svc["spec"]["selector"]) == {name}
    for name, pdb in of_kind(overlay, "PodDisruptionBudget").items():
        assert selects(pdb["spec"]["selector"]["matchLabels"]) == {name}
    for scaler in [*of_kind(overlay, "ScaledObject").values(), *of_kind(overlay, "HorizontalPodAutoscaler").values()]:
        assert scaler["spec"]["scaleTargetRef"]["name"] in deployments
    for so in of_kind(overlay, "ScaledObject").values():
        assert so["spec"]["triggers"][0]["authenticationRef"]["name"] in of_kind(overlay, "TriggerAuthentication")
        assert so["spec"]["maxReplicaCount"] <= CATALOG[so["spec"]["triggers"][0]["metadata"]["topic"]].partitions
    claims = set(of_kind(overlay, "PersistentVolumeClaim"))
    config_maps = set(of_kind(overlay, "ConfigMap"))
    for workload in [*deployments.values(), *of_kind(overlay, "Job").values()]:
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        for c in workload["spec"]["template"]["spec"]["containers"]:
            for source in c.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
    rendered_secrets = set(of_kind(overlay, "Secret"))
    used = set().union(*(_secret_refs(d) for d in rendered(overlay)))
    users = set(of_kind(overlay, "KafkaUser"))
    unknown = used - rendered_secrets - OPERATOR_SECRETS - YOUR_SECRETS - users
    assert not unknown, f"Secrets nobody makes: {sorted(unknown)}"
    if overlay == "dev":
        assert used & YOUR_SECRETS <= rendered_secrets  # dev generates what production asks of you
