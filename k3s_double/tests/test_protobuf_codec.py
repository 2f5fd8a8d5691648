"""Protobuf bodies without Docker: the wire format, the codec, the KubeAPI hook.

The fixtures in :data:`CAPTURED` are request bodies kubectl v1.35.2 sent to
the double (recorded by a proxy in front of it), so the decoder is checked
against what client-go writes, not only against our own encoder; what they
must decode to is kubectl's own ``--dry-run=client -o json`` of the same
command.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from k3s_double.apiserver import protobuf
from k3s_double.apiserver import protowire
from k3s_double.apiserver.errors import ApiError
from k3s_double.apiserver.protoschema import KINDS
from k3s_double.apiserver.protoschema import MESSAGES
from k3s_double.apiserver.protowire import I32
from k3s_double.apiserver.protowire import I64
from k3s_double.apiserver.protowire import LEN
from k3s_double.apiserver.protowire import VARINT
from k3s_double.apiserver.protowire import length_delimited
from k3s_double.apiserver.protowire import tag
from k3s_double.apiserver.protowire import varint
from k3s_double.apiserver.response import Response
from k3s_double.apiserver.server import KubeAPI


PROTOBUF = "application/vnd.kubernetes.protobuf"
#: What client-go sends: protobuf first, JSON allowed.
CLIENT_GO_ACCEPT = "application/vnd.kubernetes.protobuf,application/json"

#: Bodies kubectl v1.35.2 sent for ``kubectl create ...`` (hex).
CAPTURED = {
    # kubectl create namespace x
    "namespace": (
        "6b3873000a0f0a02763112094e616d65737061636512190a110a017812001a00"
        "22002a0032003800420012001a020a001a002200"
    ),
    # kubectl create secret generic s --from-literal=a=b --from-literal=c=d
    "secret": (
        "6b3873000a0c0a027631120653656372657412250a110a017312001a0022002a"
        "0032003800420012060a016112016212060a01631201641a001a002200"
    ),
    # kubectl create configmap cm --from-literal=k=v
    "configmap": (
        "6b3873000a0f0a0276311209436f6e6669674d6170121c0a120a02636d12001a"
        "0022002a0032003800420012060a016b1201761a002200"
    ),
    # kubectl create deployment web --image=nginx:1.27 --replicas=2 --port=80
    "deployment": (
        "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412bd010a1f"
        "0a0377656212001a0022002a003200380042005a0a0a03617070120377656212"
        "8b010802120c0a0a0a0361707012037765621a710a1c0a0012001a0022002a00"
        "3200380042005a0a0a036170701203776562125112330a056e67696e78120a6e"
        "67696e783a312e32372a00320a0a001000185022002a0042006a007200800100"
        "880100900100a201001a00320042004a0052005800600068008201008a01009a"
        "0100c2010022020a00280038001a0c0800100018002000280038001a002200"
    ),
    # helm v4.1.4 uninstall: the DELETE of its release Secret
    "deleteoptions": "6b3873000a130a027631120d44656c6574654f7074696f6e7312001a002200",
}
#: kubectl v1.35.2's ``--dry-run=client -o json`` of the same commands.
EXPECTED: dict[str, dict[str, Any]] = {
    "namespace": {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": "x"},
        "spec": {},
        "status": {},
    },
    "secret": {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "s"},
        "data": {"a": "Yg==", "c": "ZA=="},
    },
    "configmap": {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "cm"},
        "data": {"k": "v"},
    },
    "deployment": {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "ports": [{"containerPort": 80}],
                            "resources": {},
                        }
                    ]
                },
            },
            "strategy": {},
        },
        "status": {},
    },
    "deleteoptions": {"kind": "DeleteOptions", "apiVersion": "v1"},
}

TIME = "2024-05-01T10:20:30Z"
LABELS = {"app": "web", "tier": "front"}

#: A Deployment using most of what a chart writes, in the JSON form Go's
#: encoder gives (zero ``omitempty`` values absent, zero pointers present).
DEPLOYMENT: dict[str, Any] = {
    "kind": "Deployment",
    "apiVersion": "apps/v1",
    "metadata": {
        "name": "web",
        "namespace": "shop",
        "uid": "0b6c6f5e-1111-2222-3333-444455556666",
        "resourceVersion": "42",
        "generation": 3,
        "creationTimestamp": TIME,
        "deletionTimestamp": TIME,
        "deletionGracePeriodSeconds": 0,
        "labels": LABELS,
        "annotations": {"deployment.kubernetes.io/revision": "1"},
        "ownerReferences": [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": "owner",
                "uid": "u-1",
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ],
        "finalizers": ["example.com/keep"],
        "managedFields": [
            {
                "manager": "kubectl",
                "operation": "Update",
                "apiVersion": "apps/v1",
                "time": TIME,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}}},
            }
        ],
    },
    "spec": {
        "replicas": 0,
        "selector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "back"]}
            ],
        },
        "template": {
            "metadata": {"labels": LABELS},
            "spec": {
                "initContainers": [
                    {"name": "init", "image": "busybox", "resources": {}}
                ],
                "containers": [
                    {
                        "name": "app",
                        "image": "nginx:1.27",
                        "command": ["nginx"],
                        "args": ["-g", "daemon off;"],
                        "workingDir": "/srv",
                        "ports": [
                            {"name": "http", "containerPort": 8080, "protocol": "TCP"}
                        ],
                        "env": [
                            {"name": "PLAIN", "value": "1"},
                            {
                                "name": "FROM_SECRET",
                                "valueFrom": {
                                    "secretKeyRef": {
                                        "name": "creds",
                                        "key": "password",
                                        "optional": False,
                                    }
                                },
                            },
                            {
                                "name": "FROM_CONFIG",
                                "valueFrom": {
                                    "configMapKeyRef": {"name": "cfg", "key": "mode"}
                                },
                            },
                            {
                                "name": "POD_NAME",
                                "valueFrom": {
                                    "fieldRef": {
                                        "apiVersion": "v1",
                                        "fieldPath": "metadata.name",
                                    }
                                },
                            },
                            {
                                "name": "CPU",
                                "valueFrom": {
                                    "resourceFieldRef": {
                                        "resource": "limits.cpu",
                                        "divisor": "1m",
                                    }
                                },
                            },
                        ],
                        "envFrom": [
                            {"configMapRef": {"name": "cfg"}},
                            {
                                "prefix": "S_",
                                "secretRef": {"name": "creds", "optional": True},
                            },
                        ],
                        "resources": {
                            "limits": {"cpu": "500m", "memory": "128Mi"},
                            "requests": {"cpu": "100m", "memory": "64Mi"},
                        },
                        "volumeMounts": [
                            {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True},
                            {"name": "tmp", "mountPath": "/tmp", "subPath": "x"},
                        ],
                        "livenessProbe": {
                            "httpGet": {
                                "path": "/healthz",
                                "port": "http",
                                "scheme": "HTTP",
                                "httpHeaders": [{"name": "X-Probe", "value": "1"}],
                            },
                            "initialDelaySeconds": 5,
                            "timeoutSeconds": 1,
                            "periodSeconds": 10,
                            "successThreshold": 1,
                            "failureThreshold": 3,
                        },
                        "readinessProbe": {"tcpSocket": {"port": 8080}},
                        "startupProbe": {"exec": {"command": ["true"]}},
                        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                        "imagePullPolicy": "IfNotPresent",
                        "securityContext": {
                            "capabilities": {"drop": ["ALL"]},
                            "runAsUser": 0,
                            "runAsNonRoot": False,
                            "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                    }
                ],
                "volumes": [
                    {
                        "name": "cfg",
                        "configMap": {
                            "name": "cfg",
                            "items": [{"key": "mode", "path": "mode", "mode": 256}],
                            "defaultMode": 420,
                            "optional": False,
                        },
                    },
                    {
                        "name": "creds",
                        "secret": {"secretName": "creds", "defaultMode": 256},
                    },
                    {
                        "name": "tmp",
                        "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"},
                    },
                    {
                        "name": "logs",
                        "hostPath": {"path": "/var/log", "type": "Directory"},
                    },
                    {
                        "name": "data",
                        "persistentVolumeClaim": {
                            "claimName": "data",
                            "readOnly": True,
                        },
                    },
                    {
                        "name": "token",
                        "projected": {
                            "sources": [
                                {
                                    "serviceAccountToken": {
                                        "audience": "api",
                                        "expirationSeconds": 3600,
                                        "path": "token",
                                    }
                                },
                                {"configMap": {"name": "kube-root-ca.crt"}},
                                {
                                    "downwardAPI": {
                                        "items": [
                                            {
                                                "path": "namespace",
                                                "fieldRef": {
                                                    "apiVersion": "v1",
                                                    "fieldPath": "metadata.namespace",
                                                },
                                            }
                                        ]
                                    }
                                },
                            ],
                            "defaultMode": 420,
                        },
                    },
                    {
                        "name": "labels",
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "labels",
                                    "fieldRef": {"fieldPath": "metadata.labels"},
                                }
                            ]
                        },
                    },
                    {"name": "share", "nfs": {"server": "nfs.local", "path": "/x"}},
                ],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 0,
                "dnsPolicy": "ClusterFirst",
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "serviceAccountName": "web",
                "automountServiceAccountToken": False,
                "securityContext": {"runAsGroup": 0, "fsGroup": 2000},
                "imagePullSecrets": [{"name": "registry"}],
                "affinity": {
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 100,
                                "podAffinityTerm": {
                                    "labelSelector": {"matchLabels": {"app": "web"}},
                                    "topologyKey": "kubernetes.io/hostname",
                                },
                            }
                        ]
                    }
                },
                "tolerations": [
                    {
                        "key": "node.kubernetes.io/unreachable",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 0,
                    }
                ],
                "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db"]}],
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "zone",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app": "web"}},
                    }
                ],
            },
        },
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1},
        },
        "minReadySeconds": 5,
        "revisionHistoryLimit": 0,
        "progressDeadlineSeconds": 600,
    },
    "status": {
        "observedGeneration": 3,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "lastUpdateTime": TIME,
                "lastTransitionTime": TIME,
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            }
        ],
    },
}

OBJECTS: list[dict[str, Any]] = [
    DEPLOYMENT,
    {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "bin", "labels": {"owner": "helm"}},
        "immutable": False,
        "data": {"release": "H4sIAAAAAAAA/wEAAP//AAAAAAAAAAA=", "empty": ""},
        "type": "helm.sh/release.v1",
    },
    {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "cfg"},
        "data": {"mode": "fast", "": "empty key"},
        "binaryData": {"blob": "AAECAw=="},
    },
    {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"name": "web"},
        "spec": {
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http"},
                {"name": "alt", "port": 8080, "targetPort": 0, "nodePort": 30080},
            ],
            "selector": {"app": "web"},
            "clusterIP": "10.43.0.10",
            "clusterIPs": ["10.43.0.10"],
            "type": "NodePort",
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "externalTrafficPolicy": "Cluster",
        },
        "status": {
            "loadBalancer": {"ingress": [{"ip": "172.18.0.2", "ipMode": "VIP"}]}
        },
    },
    {
        "kind": "Job",
        "apiVersion": "batch/v1",
        "metadata": {"name": "once"},
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 0,
            "suspend": False,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {"operator": "In", "values": [1, 2, 42]},
                    }
                ]
            },
            "template": {
                "metadata": {},
                "spec": {
                    "containers": [
                        {"name": "run", "image": "busybox", "resources": {}}
                    ],
                    "restartPolicy": "Never",
                },
            },
        },
        "status": {
            "startTime": TIME,
            "completionTime": TIME,
            "succeeded": 1,
            "conditions": [
                {
                    "type": "Complete",
                    "status": "True",
                    "lastProbeTime": TIME,
                    "lastTransitionTime": TIME,
                }
            ],
        },
    },
    {
        "kind": "Role",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "reader", "namespace": "default"},
        "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}],
    },
    {
        "kind": "RoleBinding",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "x"}],
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "r",
        },
    },
    {
        "kind": "ServiceAccount",
        "apiVersion": "v1",
        "metadata": {"name": "sa"},
        "secrets": [{"name": "token"}],
        "automountServiceAccountToken": False,
    },
    {
        "kind": "Lease",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": {"name": "leader"},
        "spec": {
            "holderIdentity": "me",
            "leaseDurationSeconds": 15,
            "acquireTime": "2024-05-01T10:20:30.123456Z",
            "renewTime": "2024-05-01T10:20:31.000001Z",
            "leaseTransitions": 0,
        },
    },
    {
        "kind": "Event",
        "apiVersion": "events.k8s.io/v1",
        "metadata": {"name": "e1", "namespace": "default"},
        "eventTime": "2024-05-01T10:20:30.500000Z",
        "reportingController": "helm",
        "reportingInstance": "helm-1",
        "action": "Install",
        "reason": "Installed",
        "regarding": {"kind": "Pod", "name": "web", "namespace": "default"},
        "note": "installed",
        "type": "Normal",
    },
    {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {},
        "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}},
        "status": {"allowed": True, "reason": "cluster-admin"},
    },
    {
        "kind": "SubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {},
        "spec": {"user": "bob", "extra": {"scopes": ["a", "b"]}, "groups": ["dev"]},
        "status": {"allowed": False},
    },
    {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": "web"},
        "spec": {"replicas": 3},
        "status": {"replicas": 2, "selector": "app=web"},
    },
    {
        "kind": "NamespaceList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "7", "continue": "abc"},
        "items": [
            {"metadata": {"name": "default"}, "spec": {"finalizers": ["kubernetes"]}},
            {"metadata": {"name": "x"}, "status": {"phase": "Terminating"}},
        ],
    },
    {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'secrets "s" not found',
        "reason": "NotFound",
        "details": {"name": "s", "kind": "secrets"},
        "code": 404,
    },
    {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": "u-1", "resourceVersion": "9"},
        "propagationPolicy": "Foreground",
        "dryRun": ["All"],
    },
]


# The wire format.


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31 - 1, 2**63 - 1])
def test_varints_round_trip(value: int) -> None:
    encoded = varint(value)
    assert protowire.read_varint(encoded, 0) == (value, len(encoded))


def test_negative_ints_are_ten_byte_twos_complement() -> None:
    encoded = varint(-1)
    assert len(encoded) == 10
    unsigned, _ = protowire.read_varint(encoded, 0)
    assert protowire.signed(unsigned, 32) == -1
    assert protowire.signed(unsigned, 64) == -1
    assert protowire.signed(2**31, 32) == -(2**31)


def test_fields_reads_all_four_wire_types() -> None:
    data = (
        tag(1, VARINT)
        + varint(150)
        + tag(2, I64)
        + (7).to_bytes(8, "little")
        + length_delimited(3, b"abc")
        + tag(4, I32)
        + (9).to_bytes(4, "little")
    )
    assert list(protowire.fields(data)) == [
        (1, VARINT, 150),
        (2, I64, 7),
        (3, LEN, b"abc"),
        (4, I32, 9),
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"\x08",  # a key, no value
        b"\x08\xff",  # a varint cut short
        b"\x1a\x05ab",  # a length past the end
        b"\x0b",  # a group (wire type 3)
        b"\x00\x01",  # field number 0
    ],
)
def test_malformed_bytes_are_wire_errors(data: bytes) -> None:
    with pytest.raises(protowire.WireError):
        list(protowire.fields(data))


def test_envelope_round_trip() -> None:
    body = protowire.wrap("apps/v1", "Deployment", b"\x0a\x00")
    assert body.startswith(b"k8s\x00")
    assert protowire.unwrap(body) == ("apps/v1", "Deployment", b"\x0a\x00")
    with pytest.raises(protowire.WireError, match="does not appear"):
        protowire.unwrap(b'{"kind": "Namespace"}')


# Decoding what a real client sent.


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_captured_client_bodies_decode_to_the_clients_json(name: str) -> None:
    assert protobuf.decode_object(bytes.fromhex(CAPTURED[name])) == EXPECTED[name]


def test_captured_bodies_reencode_to_what_decodes_the_same() -> None:
    for name, hexed in CAPTURED.items():
        decoded = protobuf.decode_object(bytes.fromhex(hexed))
        encoded = protobuf.encode_object(decoded)
        assert encoded is not None
        assert protobuf.decode_object(encoded) == decoded, name


# The codec, against its own encoder.


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda obj: obj["kind"])
def test_round_trip(obj: dict[str, Any]) -> None:
    encoded = protobuf.encode_object(obj)
    assert encoded is not None
    assert protobuf.decode_object(encoded) == obj


def test_zero_pointers_stay_and_zero_plain_values_go() -> None:
    """``replicas: 0`` (a pointer) is sent; ``minReadySeconds: 0`` is not."""
    spec = {"replicas": 0, "minReadySeconds": 0, "paused": False}
    raw = protobuf.encode_message("DeploymentSpec", spec)
    assert raw == tag(1, VARINT) + varint(0)
    # Go's serializer writes plain fields even when zero: they decode away.
    written = raw + tag(5, VARINT) + varint(0) + tag(7, VARINT) + varint(0)
    assert protobuf.decode_message("DeploymentSpec", written) == {"replicas": 0}


def test_times_drop_what_json_drops() -> None:
    """``Time`` keeps seconds, ``MicroTime`` microseconds; empty is the zero time."""
    stamp = tag(1, VARINT) + varint(1714558830) + tag(2, VARINT) + varint(123456789)
    condition = length_delimited(3, stamp)  # JobCondition.lastProbeTime
    assert protobuf.decode_message("JobCondition", condition) == {"lastProbeTime": TIME}
    lease = length_delimited(3, stamp)  # LeaseSpec.acquireTime
    assert protobuf.decode_message("LeaseSpec", lease) == {
        "acquireTime": "2024-05-01T10:20:30.123456Z"
    }
    assert protobuf.decode_message("JobCondition", length_delimited(3, b"")) == {
        "lastProbeTime": None
    }
    # creationTimestamp is ``omitzero``: its zero is left out.
    assert protobuf.decode_message("ObjectMeta", length_delimited(8, b"")) == {}


def test_unknown_fields_are_skipped_at_any_depth() -> None:
    obj: dict[str, Any] = {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "cm"},
        "data": {"k": "v"},
    }
    unknown = (
        tag(90, VARINT)
        + varint(5)
        + tag(91, I64)
        + bytes(8)
        + length_delimited(92, b"\x0a\x03new")
        + tag(93, I32)
        + bytes(4)
    )
    metadata = protobuf.encode_message("ObjectMeta", obj["metadata"]) + unknown
    raw = length_delimited(1, metadata) + unknown
    raw += protobuf.encode_message("ConfigMap", {"data": obj["data"]})
    body = protowire.wrap("v1", "ConfigMap", raw)
    assert protobuf.decode_object(body) == obj


def test_packed_repeated_numbers_decode_like_unpacked_ones() -> None:
    values = [1, 2, 300]
    unpacked = b"".join(tag(3, VARINT) + varint(v) for v in values)
    packed = length_delimited(3, b"".join(varint(v) for v in values))
    decode = protobuf.decode_message
    name = "PodFailurePolicyOnExitCodesRequirement"
    assert decode(name, unpacked) == decode(name, packed) == {"values": values}


def test_int_or_string_and_quantity() -> None:
    port = protobuf.encode_message("ServicePort", {"port": 80, "targetPort": "web"})
    assert protobuf.decode_message("ServicePort", port)["targetPort"] == "web"
    port = protobuf.encode_message("ServicePort", {"port": 80, "targetPort": 8080})
    assert protobuf.decode_message("ServicePort", port)["targetPort"] == 8080
    limits = {"limits": {"cpu": "1500m", "memory": "1Gi"}}
    raw = protobuf.encode_message("ResourceRequirements", limits)
    assert protobuf.decode_message("ResourceRequirements", raw) == limits


def test_a_wrong_wire_type_for_a_known_field_is_an_error() -> None:
    raw = tag(1, VARINT) + varint(3)  # ObjectMeta.name must be a string
    with pytest.raises(protowire.WireError, match="wrong wire type"):
        protobuf.decode_message("ObjectMeta", raw)


def test_every_message_type_in_the_table_exists() -> None:
    specials = {"Time", "MicroTime", "Quantity", "IntOrString", "FieldsV1"}
    specials |= {"ExtraValue", "string", "bool", "int32", "int64", "bytes"}
    for name, fields in MESSAGES.items():
        for number, (_, type_, _) in fields.items():
            base = type_.removeprefix("map[string]")
            assert base in specials or base in MESSAGES, (name, number, type_)
    assert all(message in MESSAGES for message in KINDS.values())


# Errors, as the API server gives them.


def test_a_kind_without_a_message_is_415_naming_it() -> None:
    body = protowire.wrap("apps/v1", "StatefulSet", b"")
    with pytest.raises(ApiError) as caught:
        protobuf.decode_object(body)
    assert caught.value.code == 415
    assert caught.value.reason == "UnsupportedMediaType"
    assert caught.value.message.startswith(
        "the body of the request was in an unknown format - accepted media types "
        "include: application/json, application/yaml"
    )
    assert '"StatefulSet"' in caught.value.message
    assert '"apps/v1"' in caught.value.message


def test_bytes_that_are_no_protobuf_are_400() -> None:
    with pytest.raises(ApiError) as caught:
        protobuf.decode_object(b"k8s\x00\x0a\x05ab")
    assert caught.value.code == 400


@pytest.mark.parametrize(
    ("accept", "only"),
    [
        ("", False),
        ("application/json", False),
        (CLIENT_GO_ACCEPT, False),
        ("application/vnd.kubernetes.protobuf, */*", False),
        ("application/vnd.kubernetes.protobuf", True),
        ("application/vnd.kubernetes.protobuf;q=0.9", True),
        ("application/vnd.kubernetes.protobuf, application/json;q=0", True),
        ("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io", False),
        ("application/yaml", False),
    ],
)
def test_protobuf_only_accept_headers(accept: str, only: bool) -> None:
    assert protobuf.protobuf_only(accept) is only


# Through the KubeAPI, as the listener calls it.


def _call(
    api: KubeAPI,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    content_type: str = PROTOBUF,
    accept: str = CLIENT_GO_ACCEPT,
) -> Any:
    headers = {"content-type": content_type, "accept": accept}
    return api.handle(method, target, headers, body, user="system:admin")


def _config_map(data: dict[str, str], **metadata: Any) -> bytes:
    obj = {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "cm", **metadata},
        "data": data,
    }
    encoded = protobuf.encode_object(obj)
    assert encoded is not None
    return encoded


def test_create_update_and_delete_with_protobuf_bodies(api: KubeAPI) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    created = _call(api, "POST", path, _config_map({"k": "v"}))
    assert created.status == 201, created.body
    assert created.content_type == "application/json"
    stored = json.loads(created.body)
    assert stored["data"] == {"k": "v"}
    rv = stored["metadata"]["resourceVersion"]
    updated = _call(
        api, "PUT", f"{path}/cm", _config_map({"k": "w"}, resourceVersion=rv)
    )
    assert updated.status == 200, updated.body
    assert api.find("ConfigMap", "default", "cm")["data"] == {"k": "w"}  # type: ignore[index]
    stale = _call(api, "PUT", f"{path}/cm", _config_map({"k": "x"}, resourceVersion=rv))
    assert stale.status == 409
    options = {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "preconditions": {"uid": "no"},
    }
    refused = _call(api, "DELETE", f"{path}/cm", protobuf.encode_object(options) or b"")
    assert refused.status == 409, refused.body
    options = {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": "Background",
    }
    deleted = _call(api, "DELETE", f"{path}/cm", protobuf.encode_object(options) or b"")
    assert deleted.status == 200, deleted.body
    assert api.find("ConfigMap", "default", "cm") is None


def test_a_patch_is_never_protobuf(api: KubeAPI) -> None:
    _call(api, "POST", "/api/v1/namespaces/default/configmaps", _config_map({}))
    patched = _call(api, "PATCH", "/api/v1/namespaces/default/configmaps/cm", b"x")
    assert patched.status == 415


def test_a_kind_without_a_message_is_refused_through_the_api(api: KubeAPI) -> None:
    body = protowire.wrap("apps/v1", "StatefulSet", b"")
    answer = _call(api, "POST", "/api/v1/namespaces/default/configmaps", body)
    assert answer.status == 415
    assert '"StatefulSet"' in json.loads(answer.body)["message"]


def test_protobuf_only_clients_get_protobuf(api: KubeAPI) -> None:
    only = "application/vnd.kubernetes.protobuf"
    created = _call(
        api, "POST", "/api/v1/namespaces/default/configmaps", _config_map({"a": "b"}),
        accept=only,
    )  # fmt: skip
    assert created.status == 201
    assert created.content_type == PROTOBUF
    assert protobuf.decode_object(created.body)["data"] == {"a": "b"}
    got = _call(api, "GET", "/api/v1/namespaces/default/configmaps/cm", accept=only)
    assert protobuf.decode_object(got.body)["metadata"]["name"] == "cm"
    listed = _call(api, "GET", "/api/v1/namespaces", accept=only)
    names = [
        i["metadata"]["name"] for i in protobuf.decode_object(listed.body)["items"]
    ]
    assert "kube-system" in names
    missing = _call(api, "GET", "/api/v1/namespaces/default/secrets/no", accept=only)
    assert missing.status == 404
    assert missing.content_type == PROTOBUF
    status = protobuf.decode_object(missing.body)
    assert (status["kind"], status["reason"], status["code"]) == (
        "Status",
        "NotFound",
        404,
    )
    # Discovery and /version stay JSON, as the API server serves them.
    assert _call(api, "GET", "/version", accept=only).content_type == "application/json"


def test_kinds_without_a_message_are_406_for_protobuf_only_clients(
    api: KubeAPI,
) -> None:
    answer = _call(
        api, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        accept="application/vnd.kubernetes.protobuf",
    )  # fmt: skip
    assert answer.status == 406
    assert json.loads(answer.body)["reason"] == "NotAcceptable"


def test_protobuf_watch_frames(api: KubeAPI) -> None:
    listed = json.loads(_call(api, "GET", "/api/v1/namespaces").body)
    since = listed["metadata"]["resourceVersion"]
    created = _call(
        api, "POST", "/api/v1/namespaces", bytes.fromhex(CAPTURED["namespace"])
    )
    assert created.status == 201, created.body
    target = f"/api/v1/namespaces?watch=1&resourceVersion={since}&timeoutSeconds=1"
    answer = _call(api, "GET", target, accept="application/vnd.kubernetes.protobuf")
    assert answer.content_type == "application/vnd.kubernetes.protobuf;stream=watch"
    assert answer.stream is not None
    data = b"".join(answer.stream)
    events = []
    while data:
        size = int.from_bytes(data[:4], "big")
        message, data = data[4 : 4 + size], data[4 + size :]
        fields = {n: v for n, _, v in protowire.fields(message)}
        assert isinstance(fields[2], bytes)
        (raw,) = [v for n, _, v in protowire.fields(fields[2]) if n == 1]
        assert isinstance(raw, bytes)
        assert isinstance(fields[1], bytes)
        events.append((fields[1].decode(), protobuf.decode_object(raw)))
    assert ("ADDED", "x") in [(t, o["metadata"]["name"]) for t, o in events]


def test_json_clients_are_untouched(api: KubeAPI) -> None:
    body = json.dumps(EXPECTED["configmap"]).encode()
    answer = _call(
        api, "POST", "/api/v1/namespaces/default/configmaps", body,
        content_type="application/json", accept="application/json",
    )  # fmt: skip
    assert answer.status == 201
    assert json.loads(answer.body)["data"] == {"k": "v"}


def test_objects_are_not_mutated_by_encoding() -> None:
    before = copy.deepcopy(DEPLOYMENT)
    protobuf.encode_object(DEPLOYMENT)
    assert before == DEPLOYMENT


def test_a_value_that_does_not_fit_its_field_is_a_500() -> None:
    bad = {"kind": "ConfigMap", "apiVersion": "v1", "data": {"k": 1}}
    answer = protobuf.encode_reply(Response(200, json.dumps(bad).encode()))
    assert answer.status == 500
    assert json.loads(answer.body)["reason"] == "InternalError"


def test_a_watch_event_without_a_message_ends_the_stream() -> None:
    events = [
        {"type": "ADDED", "object": EXPECTED["configmap"]},
        {"type": "ADDED", "object": {"kind": "Widget", "apiVersion": "x.io/v1"}},
        {"type": "ADDED", "object": EXPECTED["namespace"]},
    ]
    lines = iter([(json.dumps(e) + "\n").encode() for e in events])
    answer = protobuf.encode_reply(Response(200, stream=lines))
    assert answer.stream is not None
    frames = list(answer.stream)
    assert len(frames) == 1
    assert protobuf.encode_watch_event(events[0]) == frames[0]
