"""Write the pruned Strimzi Kafka/KafkaNodePool and CloudNativePG Cluster schemas (see SOURCES.md).

The upstream CRD schemas of these three kinds are very large (Strimzi's Kafka alone is about 640 kB
as JSON Schema) and were not vendored whole. These pruned schemas keep, at the levels gxami's
manifests use, every property name the upstream schema has there, with upstream types and enums,
and refuse unknown names (a typo fails); the subtrees gxami does not use are open objects.
Run: python deploy/schemas/pruned.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
OPEN: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
BOOL: dict[str, Any] = {"type": "boolean"}
STRS: dict[str, Any] = {"type": "array", "items": STR}
ANYLIST: dict[str, Any] = {"type": "array", "items": OPEN}
QUANTITY: dict[str, Any] = {"anyOf": [{"type": "integer"}, {"type": "string"}]}


def obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A closed object: only these properties."""
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = list(required)
    return out


def enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": OPEN,
        },
        "additionalProperties": False,
    }


RESOURCES = obj({"claims": ANYLIST, "limits": {"type": "object"}, "requests": {"type": "object"}})

LISTENER = obj(
    {
        "name": {"type": "string", "pattern": "^[a-z0-9]{1,11}$"},
        "port": {"type": "integer", "minimum": 9092},
        "type": enum("internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"),
        "tls": BOOL,
        "authentication": obj(
            {
                "type": enum("tls", "scram-sha-512", "oauth", "custom"),
                "listenerConfig": OPEN,
                "sasl": BOOL,
                "secrets": ANYLIST,
                # oauth's many options are not listed: use the full schema for oauth listeners
            },
            ("type",),
        ),
        "configuration": OPEN,
        "networkPolicyPeers": ANYLIST,
    },
    ("name", "port", "type", "tls"),
)

KAFKA = resource(
    "kafka.strimzi.io/v1beta2",
    "Kafka",
    obj(
        {
            "kafka": obj(
                {
                    "version": STR,
                    "metadataVersion": STR,
                    "replicas": INT,
                    "image": STR,
                    "listeners": {"type": "array", "minItems": 1, "items": LISTENER},
                    "config": OPEN,
                    "storage": OPEN,
                    "authorization": obj(
                        {
                            "type": enum("simple", "opa", "keycloak", "custom"),
                            "superUsers": STRS,
                            # further options of opa, keycloak and custom authorizers are not listed
                        },
                        ("type",),
                    ),
                    "rack": OPEN,
                    "brokerRackInitImage": STR,
                    "livenessProbe": OPEN,
                    "readinessProbe": OPEN,
                    "jvmOptions": OPEN,
                    "jmxOptions": OPEN,
                    "resources": RESOURCES,
                    "metricsConfig": OPEN,
                    "logging": OPEN,
                    "template": OPEN,
                    "tieredStorage": OPEN,
                    "quotas": OPEN,
                },
                ("listeners",),
            ),
            "zookeeper": OPEN,
            "entityOperator": obj({"topicOperator": OPEN, "userOperator": OPEN, "tlsSidecar": OPEN, "template": OPEN}),
            "clusterCa": OPEN,
            "clientsCa": OPEN,
            "cruiseControl": OPEN,
            "jmxTrans": OPEN,
            "kafkaExporter": obj(
                {
                    "image": STR,
                    "groupRegex": STR,
                    "topicRegex": STR,
                    "groupExcludeRegex": STR,
                    "topicExcludeRegex": STR,
                    "resources": RESOURCES,
                    "logging": STR,
                    "livenessProbe": OPEN,
                    "readinessProbe": OPEN,
                    "enableSaramaLogging": BOOL,
                    "showAllOffsets": BOOL,
                    "template": OPEN,
                }
            ),
            "maintenanceTimeWindows": STRS,
        },
        ("kafka",),
    ),
)

JVM_OPTIONS = obj(
    {
        "-XX": {"type": "object", "additionalProperties": STR},
        "-Xms": {"type": "string", "pattern": "^[0-9]+[mMgG]?$"},
        "-Xmx": {"type": "string", "pattern": "^[0-9]+[mMgG]?$"},
        "gcLoggingEnabled": BOOL,
        "javaSystemProperties": {"type": "array", "items": obj({"name": STR, "value": STR})},
    }
)
OVERRIDES: dict[str, Any] = {"type": "array", "items": obj({"broker": INT, "class": STR})}
SIZE_LIMIT: dict[str, Any] = {"type": "string", "pattern": "^([0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"}

VOLUME = obj(
    {
        "id": {"type": "integer", "minimum": 0},
        "type": enum("ephemeral", "persistent-claim"),
        "size": STR,
        "sizeLimit": SIZE_LIMIT,
        "class": STR,
        "selector": {"type": "object", "additionalProperties": STR},
        "deleteClaim": BOOL,
        "kraftMetadata": enum("shared"),
        "overrides": OVERRIDES,
    },
    ("type",),
)

NODE_POOL = resource(
    "kafka.strimzi.io/v1beta2",
    "KafkaNodePool",
    obj(
        {
            "replicas": {"type": "integer", "minimum": 0},
            "storage": obj(
                {
                    "type": enum("ephemeral", "persistent-claim", "jbod"),
                    "volumes": {"type": "array", "items": VOLUME},
                    "id": INT,
                    "size": STR,
                    "sizeLimit": SIZE_LIMIT,
                    "class": STR,
                    "selector": {"type": "object", "additionalProperties": STR},
                    "deleteClaim": BOOL,
                    "kraftMetadata": enum("shared"),
                    "overrides": OVERRIDES,
                },
                ("type",),
            ),
            "roles": {"type": "array", "items": enum("controller", "broker")},
            "resources": RESOURCES,
            "jvmOptions": JVM_OPTIONS,
            "template": OPEN,
        },
        ("roles", "storage"),
    ),
)

ROLE = obj(
    {
        "name": STR,
        "ensure": enum("present", "absent"),
        "comment": STR,
        "login": BOOL,
        "inherit": BOOL,
        "superuser": BOOL,
        "createdb": BOOL,
        "createrole": BOOL,
        "replication": BOOL,
        "bypassrls": BOOL,
        "connectionLimit": INT,
        "validUntil": STR,
        "passwordSecret": obj({"name": STR}, ("name",)),
        "disablePassword": BOOL,
        "inRoles": STRS,
    },
    ("name",),
)

INITDB = obj(
    {
        "database": STR,
        "owner": STR,
        "secret": obj({"name": STR}, ("name",)),
        "options": STRS,
        "dataChecksums": BOOL,
        "encoding": STR,
        "locale": STR,
        "localeCollate": STR,
        "localeCType": STR,
        "localeProvider": STR,
        "icuLocale": STR,
        "icuRules": STR,
        "builtinLocale": STR,
        "walSegmentSize": INT,
        "postInitSQL": STRS,
        "postInitApplicationSQL": STRS,
        "postInitTemplateSQL": STRS,
        "postInitSQLRefs": OPEN,
        "postInitApplicationSQLRefs": OPEN,
        "postInitTemplateSQLRefs": OPEN,
        "import": OPEN,
    }
)

CLUSTER = resource(
    "postgresql.cnpg.io/v1",
    "Cluster",
    obj(
        {
            "instances": {"type": "integer", "minimum": 1},
            "description": STR,
            "imageName": STR,
            "imageCatalogRef": OPEN,
            "imagePullPolicy": STR,
            "imagePullSecrets": ANYLIST,
            "postgresUID": INT,
            "postgresGID": INT,
            "primaryUpdateStrategy": enum("unsupervised", "supervised"),
            "primaryUpdateMethod": enum("switchover", "restart"),
            "postgresql": obj(
                {
                    "parameters": {"type": "object", "additionalProperties": STR},
                    "shared_preload_libraries": STRS,
                    "pg_hba": STRS,
                    "pg_ident": STRS,
                    "synchronous": OPEN,
                    "syncReplicaElectionConstraint": OPEN,
                    "ldap": OPEN,
                    "promotionTimeout": INT,
                    "enableAlterSystem": BOOL,
                    "extensions": ANYLIST,
                }
            ),
            "bootstrap": obj({"initdb": INITDB, "recovery": OPEN, "pg_basebackup": OPEN}),
            "managed": obj({"roles": {"type": "array", "items": ROLE}, "services": OPEN}),
            "storage": obj({"size": STR, "storageClass": STR, "resizeInUseVolumes": BOOL, "pvcTemplate": OPEN}),
            "walStorage": OPEN,
            "tablespaces": ANYLIST,
            "resources": RESOURCES,
            "monitoring": obj(
                {
                    "enablePodMonitor": BOOL,
                    "customQueriesConfigMap": ANYLIST,
                    "customQueriesSecret": ANYLIST,
                    "disableDefaultQueries": BOOL,
                    "podMonitorMetricRelabelings": ANYLIST,
                    "podMonitorRelabelings": ANYLIST,
                    "tls": OPEN,
                }
            ),
            "backup": OPEN,
            "affinity": OPEN,
            "topologySpreadConstraints": ANYLIST,
            "superuserSecret": OPEN,
            "enableSuperuserAccess": BOOL,
            "certificates": OPEN,
            "env": ANYLIST,
            "envFrom": ANYLIST,
            "startDelay": INT,
            "stopDelay": INT,
            "smartShutdownTimeout": INT,
            "switchoverDelay": INT,
            "failoverDelay": INT,
            "livenessProbeTimeout": INT,
            "maxSyncReplicas": INT,
            "minSyncReplicas": INT,
            "nodeMaintenanceWindow": OPEN,
            "logLevel": STR,
            "priorityClassName": STR,
            "projectedVolumeTemplate": OPEN,
            "replica": OPEN,
            "replicationSlots": OPEN,
            "seccompProfile": OPEN,
            "serviceAccountTemplate": OPEN,
            "ephemeralVolumeSource": OPEN,
            "ephemeralVolumesSizeLimit": OPEN,
            "enablePDB": BOOL,
            "externalClusters": ANYLIST,
            "inheritedMetadata": OPEN,
            "plugins": ANYLIST,
            "podSecurityContext": OPEN,
            "securityContext": OPEN,
            "probes": OPEN,
        },
        ("instances",),
    ),
)


def main() -> None:
    for path, schema in {
        "kafka.strimzi.io/kafka_v1beta2.json": KAFKA,
        "kafka.strimzi.io/kafkanodepool_v1beta2.json": NODE_POOL,
        "postgresql.cnpg.io/cluster_v1.json": CLUSTER,
    }.items():
        out = HERE / path
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
