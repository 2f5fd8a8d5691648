"""The built-in types' OpenAPI schemas, generated from a compact description.

:data:`TYPES` describes the types of the kinds the double serves (and of
``Role`` and ``RoleBinding``, published whenever their group is served), one
type a block, in a small text format:

- ``== io.k8s.api.apps.v1`` starts a package; a type's id is package and name;
- ``Deployment kind apps/v1`` starts a type (``kind <group/version>``: a kind,
  whose schema gets ``x-kubernetes-group-version-kind`` and the ``apiVersion``,
  ``kind`` and ``metadata`` fields every kind has); ``open`` marks a type whose
  field list is not exhaustive (``x-kubernetes-preserve-unknown-fields``);
- ``  replicas integer`` is a field (``selector!``: required), ``| ...`` lines
  under a type or field its description;
- field types: ``string``, ``string(A|B)`` (an enum), ``integer`` (int32),
  ``int64``, ``number``, ``boolean``, ``bytes`` (base64), ``time``,
  ``microtime``, ``quantity``, ``int-or-string``, ``object`` (free-form: an open
  object), ``[]T`` (array), ``{}T`` (map) and a type's name (``$ref``).

**What is exhaustive and what is open.** Every type not marked ``open`` lists
all the fields of its Go struct in ``k8s.io/api`` v0.35 (apimachinery's for
``meta/v1``): the kinds' top levels, ObjectMeta, LabelSelector, the specs of
Deployment, ReplicaSet, Job, Service, Namespace and Lease, PodTemplateSpec,
PodSpec, Container, its ports, env, envFrom, resources, volume mounts and
probes, Volume (by its sources' names), Toleration, ServiceAccount,
ConfigMap, Secret, the RBAC rules and subjects, the review specs. Fields of
those whose own types are not described here (``affinity``,
``securityContext``, ``lifecycle``, the volume sources, ...) are ``object``:
open. Every ``status`` is open (the double's controllers write it; a client
never sends one that matters), and so are Node's spec, CRDs' spec and core
Event's nested objects. So an unknown field is found wherever a listed
type holds it, and never where the schema is open.

Descriptions are the API's own (its Go doc comments), first sentences only,
for the types and the fields a user reads most; other fields have none.

:func:`component` renders a type as the API server's OpenAPI v3 component
(references as ``allOf: [{$ref}]``, as kube-openapi writes them), for
:mod:`.openapi`; :func:`unknown_fields` walks an object along the same
description and names what no listed type declares, as strict decoding
(``fieldValidation=Strict``) does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from .kinds import Obj


META = "io.k8s.apimachinery.pkg.apis.meta.v1"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"

TYPES = """
== io.k8s.apimachinery.pkg.apis.meta.v1

ObjectMeta
| ObjectMeta is metadata that all persisted resources must have, which includes
| all objects users must create.
  annotations {}string
  | Annotations is an unstructured key value map stored with a resource that may
  | be set by external tools to store and retrieve arbitrary metadata.
  creationTimestamp time
  deletionGracePeriodSeconds int64
  deletionTimestamp time
  finalizers []string
  | Must be empty before the object is deleted from the registry.
  generateName string
  | GenerateName is an optional prefix, used by the server, to generate a unique
  | name ONLY IF the Name field has not been provided.
  generation int64
  labels {}string
  | Map of string keys and values that can be used to organize and categorize
  | (scope and select) objects.
  managedFields []ManagedFieldsEntry
  name string
  | Name must be unique within a namespace.
  namespace string
  | Namespace defines the space within which each name must be unique.
  ownerReferences []OwnerReference
  | List of objects depended by this object.
  resourceVersion string
  selfLink string
  uid string

ManagedFieldsEntry
  apiVersion string
  fieldsType string
  fieldsV1 object
  manager string
  operation string
  subresource string
  time time

OwnerReference
  apiVersion! string
  blockOwnerDeletion boolean
  controller boolean
  kind! string
  name! string
  uid! string

LabelSelector
| A label selector is a label query over a set of resources. The result of
| matchLabels and matchExpressions are ANDed.
  matchExpressions []LabelSelectorRequirement
  | matchExpressions is a list of label selector requirements.
  matchLabels {}string
  | matchLabels is a map of {key,value} pairs.

LabelSelectorRequirement
  key! string
  operator! string
  values []string

== io.k8s.api.apps.v1

Deployment kind apps/v1
| Deployment enables declarative updates for Pods and ReplicaSets.
  spec DeploymentSpec
  | Specification of the desired behavior of the Deployment.
  status DeploymentStatus
  | Most recently observed status of the Deployment.

DeploymentSpec
| DeploymentSpec is the specification of the desired behavior of the Deployment.
  minReadySeconds integer
  | Minimum number of seconds for which a newly created pod should be ready
  | without any of its container crashing, for it to be considered available.
  | Defaults to 0 (pod will be considered available as soon as it is ready)
  paused boolean
  | Indicates that the deployment is paused.
  progressDeadlineSeconds integer
  | The maximum time in seconds for a deployment to make progress before it is
  | considered to be failed. Defaults to 600s.
  replicas integer
  | Number of desired pods. This is a pointer to distinguish between explicit
  | zero and not specified. Defaults to 1.
  revisionHistoryLimit integer
  | The number of old ReplicaSets to retain to allow rollback. Defaults to 10.
  selector! LabelSelector
  | Label selector for pods. Existing ReplicaSets whose pods are selected by
  | this will be the ones affected by this deployment. It must match the pod
  | template's labels.
  strategy DeploymentStrategy
  | The deployment strategy to use to replace existing pods with new ones.
  template! PodTemplateSpec
  | Template describes the pods that will be created. The only allowed
  | template.spec.restartPolicy value is "Always".

DeploymentStrategy
| DeploymentStrategy describes how to replace existing pods with new ones.
  rollingUpdate RollingUpdateDeployment
  | Rolling update config params. Present only if DeploymentStrategyType =
  | RollingUpdate.
  type string(Recreate|RollingUpdate)
  | Type of deployment. Can be "Recreate" or "RollingUpdate". Default is
  | RollingUpdate.

RollingUpdateDeployment
  maxSurge int-or-string
  maxUnavailable int-or-string

DeploymentStatus open
| DeploymentStatus is the most recently observed status of the Deployment.
  availableReplicas integer
  conditions []object
  observedGeneration int64
  readyReplicas integer
  replicas integer
  updatedReplicas integer

ReplicaSet kind apps/v1
| ReplicaSet ensures that a specified number of pod replicas are running at
| any given time.
  spec ReplicaSetSpec
  status object

ReplicaSetSpec
  minReadySeconds integer
  replicas integer
  selector! LabelSelector
  template PodTemplateSpec

== io.k8s.api.batch.v1

Job kind batch/v1
| Job represents the configuration of a single job.
  spec JobSpec
  | Specification of the desired behavior of a job.
  status object

JobSpec
| JobSpec describes how the job execution will look like.
  activeDeadlineSeconds int64
  backoffLimit integer
  | Specifies the number of retries before marking this job failed.
  backoffLimitPerIndex integer
  completionMode string(Indexed|NonIndexed)
  completions integer
  | Specifies the desired number of successfully finished pods the job should
  | be run with.
  managedBy string
  manualSelector boolean
  maxFailedIndexes integer
  parallelism integer
  | Specifies the maximum desired number of pods the job should run at any
  | given time.
  podFailurePolicy object
  podReplacementPolicy string(Failed|TerminatingOrFailed)
  selector LabelSelector
  successPolicy object
  suspend boolean
  template! PodTemplateSpec
  | Describes the pod that will be created when executing a job. The only
  | allowed template.spec.restartPolicy values are "Never" or "OnFailure".
  ttlSecondsAfterFinished integer

== io.k8s.api.core.v1

Pod kind v1
| Pod is a collection of containers that can run on a host. This resource is
| created by clients and scheduled onto hosts.
  spec PodSpec
  | Specification of the desired behavior of the pod.
  status object
  | Most recently observed status of the pod.

PodTemplateSpec
| PodTemplateSpec describes the data a pod should have when created from a
| template
  metadata ObjectMeta
  | Standard object's metadata.
  spec PodSpec
  | Specification of the desired behavior of the pod.

PodSpec
| PodSpec is a description of a pod.
  activeDeadlineSeconds int64
  affinity object
  automountServiceAccountToken boolean
  containers! []Container
  | List of containers belonging to the pod. There must be at least one
  | container in a Pod. Cannot be updated.
  dnsConfig object
  dnsPolicy string(ClusterFirst|ClusterFirstWithHostNet|Default|None)
  enableServiceLinks boolean
  ephemeralContainers []object
  hostAliases []object
  hostIPC boolean
  hostNetwork boolean
  hostPID boolean
  hostUsers boolean
  hostname string
  hostnameOverride string
  imagePullSecrets []LocalObjectReference
  initContainers []Container
  | List of initialization containers belonging to the pod. Init containers are
  | executed in order prior to containers being started.
  nodeName string
  nodeSelector {}string
  | NodeSelector is a selector which must be true for the pod to fit on a node.
  os object
  overhead {}quantity
  preemptionPolicy string(Never|PreemptLowerPriority)
  priority integer
  priorityClassName string
  readinessGates []object
  resourceClaims []object
  resources object
  restartPolicy string(Always|Never|OnFailure)
  | Restart policy for all containers within the pod. One of Always, OnFailure,
  | Never. Default to Always.
  runtimeClassName string
  schedulerName string
  schedulingGates []object
  securityContext object
  serviceAccount string
  serviceAccountName string
  | ServiceAccountName is the name of the ServiceAccount to use to run this pod.
  setHostnameAsFQDN boolean
  shareProcessNamespace boolean
  subdomain string
  terminationGracePeriodSeconds int64
  | Optional duration in seconds the pod needs to terminate gracefully.
  tolerations []Toleration
  | If specified, the pod's tolerations.
  topologySpreadConstraints []object
  volumes []Volume
  | List of volumes that can be mounted by containers belonging to the pod.
  workloadRef object

Container
| A single application container that you want to run within a pod.
  args []string
  | Arguments to the entrypoint. The container image's CMD is used if this is
  | not provided.
  command []string
  | Entrypoint array. Not executed within a shell. The container image's
  | ENTRYPOINT is used if this is not provided.
  env []EnvVar
  | List of environment variables to set in the container. Cannot be updated.
  envFrom []EnvFromSource
  | List of sources to populate environment variables in the container.
  image string
  | Container image name.
  imagePullPolicy string(Always|IfNotPresent|Never)
  | Image pull policy. One of Always, Never, IfNotPresent. Defaults to Always if
  | :latest tag is specified, or IfNotPresent otherwise. Cannot be updated.
  lifecycle object
  livenessProbe Probe
  name! string
  | Name of the container specified as a DNS_LABEL. Each container in a pod
  | must have a unique name (DNS_LABEL). Cannot be updated.
  ports []ContainerPort
  | List of ports to expose from the container. Cannot be updated.
  readinessProbe Probe
  | Periodic probe of container service readiness. Container will be removed
  | from service endpoints if the probe fails. Cannot be updated.
  resizePolicy []object
  resources ResourceRequirements
  | Compute Resources required by this container. Cannot be updated.
  restartPolicy string
  restartPolicyRules []object
  securityContext object
  startupProbe Probe
  stdin boolean
  stdinOnce boolean
  terminationMessagePath string
  terminationMessagePolicy string(FallbackToLogsOnError|File)
  tty boolean
  volumeDevices []object
  volumeMounts []VolumeMount
  | Pod volumes to mount into the container's filesystem. Cannot be updated.
  workingDir string
  | Container's working directory.

ContainerPort
| ContainerPort represents a network port in a single container.
  containerPort! integer
  | Number of port to expose on the pod's IP address. This must be a valid port
  | number, 0 < x < 65536.
  hostIP string
  hostPort integer
  name string
  | If specified, this must be an IANA_SVC_NAME and unique within the pod.
  protocol string(SCTP|TCP|UDP)
  | Protocol for port. Must be UDP, TCP, or SCTP. Defaults to "TCP".

EnvVar
| EnvVar represents an environment variable present in a Container.
  name! string
  | Name of the environment variable.
  value string
  valueFrom EnvVarSource
  | Source for the environment variable's value. Cannot be used if value is
  | not empty.

EnvVarSource
  configMapKeyRef ConfigMapKeySelector
  fieldRef ObjectFieldSelector
  fileKeyRef object
  resourceFieldRef ResourceFieldSelector
  secretKeyRef SecretKeySelector

ConfigMapKeySelector
  key! string
  name string
  optional boolean

SecretKeySelector
  key! string
  name string
  optional boolean

ObjectFieldSelector
  apiVersion string
  fieldPath! string

ResourceFieldSelector
  containerName string
  divisor quantity
  resource! string

EnvFromSource
  configMapRef ConfigMapEnvSource
  prefix string
  secretRef SecretEnvSource

ConfigMapEnvSource
  name string
  optional boolean

SecretEnvSource
  name string
  optional boolean

ResourceRequirements
  claims []object
  limits {}quantity
  requests {}quantity

VolumeMount
  mountPath! string
  mountPropagation string
  name! string
  readOnly boolean
  recursiveReadOnly string
  subPath string
  subPathExpr string

Probe
| Probe describes a health check to be performed against a container to
| determine whether it is alive or ready to receive traffic.
  exec ExecAction
  failureThreshold integer
  grpc object
  httpGet HTTPGetAction
  initialDelaySeconds integer
  periodSeconds integer
  successThreshold integer
  tcpSocket TCPSocketAction
  terminationGracePeriodSeconds int64
  timeoutSeconds integer

ExecAction
  command []string

HTTPGetAction
  host string
  httpHeaders []HTTPHeader
  path string
  port! int-or-string
  scheme string(HTTP|HTTPS)

HTTPHeader
  name! string
  value! string

TCPSocketAction
  host string
  port! int-or-string

Volume
  awsElasticBlockStore object
  azureDisk object
  azureFile object
  cephfs object
  cinder object
  configMap object
  csi object
  downwardAPI object
  emptyDir object
  ephemeral object
  fc object
  flexVolume object
  flocker object
  gcePersistentDisk object
  gitRepo object
  glusterfs object
  hostPath object
  image object
  iscsi object
  name! string
  nfs object
  persistentVolumeClaim object
  photonPersistentDisk object
  portworxVolume object
  projected object
  quobyte object
  rbd object
  scaleIO object
  secret object
  storageos object
  vsphereVolume object

Toleration
  effect string(NoExecute|NoSchedule|PreferNoSchedule)
  key string
  operator string(Equal|Exists)
  tolerationSeconds int64
  value string

LocalObjectReference
  name string

ObjectReference
  apiVersion string
  fieldPath string
  kind string
  name string
  namespace string
  resourceVersion string
  uid string

Service kind v1
| Service is a named abstraction of software service (for example, mysql)
| consisting of local port (for example 3306) that the proxy listens on, and
| the selector that determines which pods will answer requests sent through
| the proxy.
  spec ServiceSpec
  | Spec defines the behavior of a service.
  status object
  | Most recently observed status of the service.

ServiceSpec
| ServiceSpec describes the attributes that a user creates on a service.
  allocateLoadBalancerNodePorts boolean
  clusterIP string
  | clusterIP is the IP address of the service and is usually assigned
  | randomly.
  clusterIPs []string
  externalIPs []string
  externalName string
  externalTrafficPolicy string(Cluster|Local)
  healthCheckNodePort integer
  internalTrafficPolicy string(Cluster|Local)
  ipFamilies []string
  ipFamilyPolicy string(PreferDualStack|RequireDualStack|SingleStack)
  loadBalancerClass string
  loadBalancerIP string
  loadBalancerSourceRanges []string
  ports []ServicePort
  | The list of ports that are exposed by this service.
  publishNotReadyAddresses boolean
  selector {}string
  | Route service traffic to pods with label keys and values matching this
  | selector.
  sessionAffinity string(ClientIP|None)
  sessionAffinityConfig object
  trafficDistribution string
  type string(ClusterIP|ExternalName|LoadBalancer|NodePort)
  | type determines how the Service is exposed. Defaults to ClusterIP. Valid
  | options are ExternalName, ClusterIP, NodePort, and LoadBalancer.

ServicePort
| ServicePort contains information on service's port.
  appProtocol string
  | The application protocol for this port.
  name string
  | The name of this port within the service. This must be a DNS_LABEL.
  nodePort integer
  | The port on each node on which this service is exposed when type is
  | NodePort or LoadBalancer.
  port! integer
  | The port that will be exposed by this service.
  protocol string(SCTP|TCP|UDP)
  | The IP protocol for this port. Supports "TCP", "UDP", and "SCTP". Default
  | is TCP.
  targetPort int-or-string
  | Number or name of the port to access on the pods targeted by the service.

ConfigMap kind v1
| ConfigMap holds configuration data for pods to consume.
  binaryData {}bytes
  | BinaryData contains the binary data.
  data {}string
  | Data contains the configuration data. Each key must consist of
  | alphanumeric characters, '-', '_' or '.'.
  immutable boolean
  | Immutable, if set to true, ensures that data stored in the ConfigMap
  | cannot be updated (only object metadata can be modified).

Secret kind v1
| Secret holds secret data of a certain type.
  data {}bytes
  | Data contains the secret data. The serialized form of the secret data is a
  | base64 encoded string.
  immutable boolean
  stringData {}string
  | stringData allows specifying non-binary secret data in string form. It is
  | provided as a write-only input field for convenience.
  type string
  | Used to facilitate programmatic handling of secret data.

Namespace kind v1
| Namespace provides a scope for Names. Use of multiple namespaces is
| optional.
  spec NamespaceSpec
  | Spec defines the behavior of the Namespace.
  status object

NamespaceSpec
  finalizers []string
  | Finalizers is an opaque list of values that must be empty to permanently
  | remove object from storage.

ServiceAccount kind v1
| ServiceAccount binds together: a name, understood by users, and perhaps by
| peripheral systems, for an identity; a principal that can be authenticated
| and authorized; a set of secrets.
  automountServiceAccountToken boolean
  imagePullSecrets []LocalObjectReference
  secrets []ObjectReference

Node kind v1
| Node is a worker node in Kubernetes.
  spec object
  status object

Event kind v1
| Event is a report of an event somewhere in the cluster.
  action string
  count integer
  eventTime microtime
  firstTimestamp time
  involvedObject! ObjectReference
  lastTimestamp time
  message string
  reason string
  related ObjectReference
  reportingComponent string
  reportingInstance string
  series object
  source object
  type string

== io.k8s.api.events.v1

Event kind events.k8s.io/v1
| Event is a report of an event somewhere in the cluster.
  action string
  deprecatedCount integer
  deprecatedFirstTimestamp time
  deprecatedLastTimestamp time
  deprecatedSource object
  eventTime! microtime
  note string
  reason string
  regarding ObjectReference
  related ObjectReference
  reportingController string
  reportingInstance string
  series object
  type string

== io.k8s.api.coordination.v1

Lease kind coordination.k8s.io/v1
| Lease defines a lease concept.
  spec LeaseSpec

LeaseSpec
  acquireTime microtime
  holderIdentity string
  leaseDurationSeconds integer
  leaseTransitions integer
  preferredHolder string
  renewTime microtime
  strategy string

== io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1

CustomResourceDefinition kind apiextensions.k8s.io/v1
| CustomResourceDefinition represents a resource that should be exposed on
| the API server.
  spec! object
  status object

== io.k8s.api.rbac.v1

Role kind rbac.authorization.k8s.io/v1
| Role is a namespaced, logical grouping of PolicyRules that can be
| referenced as a unit by a RoleBinding.
  rules []PolicyRule
  | Rules holds all the PolicyRules for this Role

PolicyRule
  apiGroups []string
  | APIGroups is the name of the APIGroup that contains the resources.
  nonResourceURLs []string
  resourceNames []string
  resources []string
  | Resources is a list of resources this rule applies to. '*' represents all
  | resources.
  verbs! []string
  | Verbs is a list of Verbs that apply to ALL the ResourceKinds contained in
  | this rule. '*' represents all verbs.

RoleBinding kind rbac.authorization.k8s.io/v1
| RoleBinding references a role, but does not contain it.
  roleRef! RoleRef
  | RoleRef can reference a Role in the current namespace or a ClusterRole in
  | the global namespace.
  subjects []Subject
  | Subjects holds references to the objects the role applies to.

RoleRef
  apiGroup! string
  kind! string
  name! string

Subject
  apiGroup string
  kind! string
  name! string
  namespace string

== io.k8s.api.authorization.v1

SelfSubjectAccessReview kind authorization.k8s.io/v1
| SelfSubjectAccessReview checks whether or the current user can perform an
| action.
  spec! SelfSubjectAccessReviewSpec
  status object

SelfSubjectAccessReviewSpec
  nonResourceAttributes NonResourceAttributes
  resourceAttributes ResourceAttributes

ResourceAttributes
  fieldSelector object
  group string
  labelSelector object
  name string
  namespace string
  resource string
  subresource string
  verb string
  version string

NonResourceAttributes
  path string
  verb string

SelfSubjectRulesReview kind authorization.k8s.io/v1
| SelfSubjectRulesReview enumerates the set of actions the current user can
| perform within a namespace.
  spec! SelfSubjectRulesReviewSpec
  status object

SelfSubjectRulesReviewSpec
  namespace string
"""

_KIND_FIELDS = {
    "apiVersion": (
        "APIVersion defines the versioned schema of this representation of an "
        "object. Servers should convert recognized schemas to the latest internal "
        "value, and may reject unrecognized values."
    ),
    "kind": (
        "Kind is a string value representing the REST resource this object "
        "represents. Servers may infer this from the endpoint the client submits "
        "requests to. Cannot be updated. In CamelCase."
    ),
    "metadata": "Standard object's metadata.",
}
#: Scalar field types: their inline schema, or the component they refer to.
_SCALARS: dict[str, Obj] = {
    "string": {"type": "string"},
    "integer": {"type": "integer", "format": "int32"},
    "int64": {"type": "integer", "format": "int64"},
    "number": {"type": "number", "format": "double"},
    "boolean": {"type": "boolean"},
    "bytes": {"type": "string", "format": "byte"},
    "object": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
}
_REFERRED = {
    "time": f"{META}.Time",
    "microtime": f"{META}.MicroTime",
    "quantity": QUANTITY,
    "int-or-string": INT_OR_STRING,
}
#: The components scalar references name (kube-openapi's v3 definitions).
_SCALAR_COMPONENTS: dict[str, Obj] = {
    f"{META}.Time": {
        "description": "Time is a wrapper around time.Time which supports correct "
        "marshaling to YAML and JSON.",
        "type": "string",
        "format": "date-time",
    },
    f"{META}.MicroTime": {
        "description": "MicroTime is version of Time with microsecond level precision.",
        "type": "string",
        "format": "date-time",
    },
    QUANTITY: {
        "description": "Quantity is a fixed-point representation of a number.",
        "oneOf": [{"type": "string"}, {"type": "number"}],
    },
    INT_OR_STRING: {
        "description": "IntOrString is a type that can hold an int32 or a string.",
        "format": "int-or-string",
        "oneOf": [{"type": "integer"}, {"type": "string"}],
    },
}


@dataclass
class Field:
    """One field of a described type: its type expression and description."""

    type: str
    description: str = ""


@dataclass
class TypeDef:
    """One described type."""

    id: str
    description: str = ""
    fields: dict[str, Field] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)
    gvk: tuple[str, str, str] | None = None
    open: bool = False


def _parse(text: str) -> dict[str, TypeDef]:
    """Read :data:`TYPES` into type definitions by id."""
    types: dict[str, TypeDef] = {}
    package = ""
    current: TypeDef | None = None
    described: TypeDef | Field | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("== "):
            package = stripped[3:]
            continue
        if stripped.startswith("|"):
            assert described is not None, line
            words = stripped[1:].strip()
            described.description = f"{described.description} {words}".strip()
            continue
        if not line.startswith(" "):
            name, *flags = stripped.split()
            current = TypeDef(f"{package}.{name}")
            if "kind" in flags:
                group_version = flags[flags.index("kind") + 1]
                group, _, version = group_version.rpartition("/")
                current.gvk = (group, version, name)
            current.open = "open" in flags
            types[current.id] = current
            described = current
            continue
        assert current is not None, line
        name, type_ = stripped.split()
        if name.endswith("!"):
            name = name[:-1]
            current.required.append(name)
        described = current.fields[name] = Field(type_)
    return types


DEFINITIONS = _parse(TYPES)


def _resolve(name: str, package: str) -> str:
    """The id a type name refers to: its own package's, else the only one."""
    own = f"{package}.{name}"
    if own in DEFINITIONS:
        return own
    found = [key for key in DEFINITIONS if key.rsplit(".", 1)[1] == name]
    if len(found) != 1:
        raise KeyError(f"type {name!r} is not described once: {found}")
    return found[0]


_ENUM = re.compile(r"string\((?P<values>[^)]*)\)")


def kind_field(name: str) -> str:
    """The description of ``apiVersion``, ``kind`` or ``metadata`` of a kind."""
    return _KIND_FIELDS[name]


def _fields(definition: TypeDef) -> dict[str, Field]:
    """A type's fields, with the ones every kind has first."""
    if definition.gvk is None:
        return definition.fields
    common = {
        "apiVersion": Field("string", _KIND_FIELDS["apiVersion"]),
        "kind": Field("string", _KIND_FIELDS["kind"]),
        "metadata": Field("ObjectMeta", _KIND_FIELDS["metadata"]),
    }
    return {**common, **definition.fields}


def _schema(type_: str, package: str) -> tuple[Obj, set[str]]:
    """The inline schema of a field type and the components it refers to."""
    if type_.startswith("[]"):
        items, refs = _schema(type_[2:], package)
        return {"type": "array", "items": items}, refs
    if type_.startswith("{}"):
        values, refs = _schema(type_[2:], package)
        return {"type": "object", "additionalProperties": values}, refs
    enum = _ENUM.fullmatch(type_)
    if enum:
        return {"type": "string", "enum": enum["values"].split("|")}, set()
    if type_ in _SCALARS:
        return dict(_SCALARS[type_]), set()
    target = _REFERRED.get(type_) or _resolve(type_, package)
    return {"allOf": [{"$ref": f"#/components/schemas/{target}"}]}, {target}


def component(type_id: str) -> tuple[Obj, set[str]]:
    """A type's OpenAPI v3 component schema and the components it refers to."""
    if type_id in _SCALAR_COMPONENTS:
        return dict(_SCALAR_COMPONENTS[type_id]), set()
    definition = DEFINITIONS[type_id]
    package = type_id.rsplit(".", 1)[0]
    properties: Obj = {}
    refs: set[str] = set()
    for name, spec in _fields(definition).items():
        schema, found = _schema(spec.type, package)
        if spec.description:
            schema["description"] = spec.description
        properties[name] = schema
        refs |= found
    schema = {"description": definition.description, "type": "object"}
    if not definition.description:
        del schema["description"]
    schema["properties"] = properties
    if definition.required:
        schema["required"] = sorted(definition.required)
    if definition.gvk is not None:
        group, version, kind = definition.gvk
        gvk = {"group": group, "kind": kind, "version": version}
        schema["x-kubernetes-group-version-kind"] = [gvk]
    if definition.open:
        schema["x-kubernetes-preserve-unknown-fields"] = True
    return schema, refs


def components(type_ids: set[str]) -> dict[str, Obj]:
    """The components of ``type_ids`` and of everything they refer to, by id."""
    found: dict[str, Obj] = {}
    pending = sorted(type_ids)
    while pending:
        type_id = pending.pop()
        if type_id in found:
            continue
        found[type_id], refs = component(type_id)
        pending += sorted(refs - set(found))
    return dict(sorted(found.items()))


@functools.cache
def kind_type(group: str, version: str, kind: str) -> str | None:
    """The id of the described type of a kind, or None when none is described."""
    for type_id, definition in DEFINITIONS.items():
        if definition.gvk == (group, version, kind):
            return type_id
    return None


def unknown_fields(type_id: str, value: Any, path: str = "") -> Iterator[str]:
    """Yield the path of every field of ``value`` its type does not declare.

    Paths are strict decoding's (``spec.template.spec.containers[0].x``).
    Values of the wrong JSON type are not looked into.
    """
    definition = DEFINITIONS[type_id]
    if not isinstance(value, dict):
        return
    package = type_id.rsplit(".", 1)[0]
    fields = _fields(definition)
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            if not definition.open:
                yield where
            continue
        yield from _unknown_in(fields[key].type, package, item, where)


def _unknown_in(type_: str, package: str, value: Any, path: str) -> Iterator[str]:
    if type_.startswith("[]"):
        if isinstance(value, list):
            for index, item in enumerate(value):
                yield from _unknown_in(type_[2:], package, item, f"{path}[{index}]")
        return
    if type_.startswith("{}"):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from _unknown_in(type_[2:], package, item, f"{path}.{key}")
        return
    if type_ in _SCALARS or type_ in _REFERRED or _ENUM.fullmatch(type_):
        return
    yield from unknown_fields(_resolve(type_, package), value, path)
