"""JSON schemas (draft 2020-12) for the KubeRay kinds in k8s/: RayJob and RayCluster, apiVersion ray.io/v1.

No package in the registries these machines reach ships KubeRay's CRD schema, so this is written here from
KubeRay's ray.io/v1 API (ray-operator/apis/ray/v1/rayjob_types.go and raycluster_types.go): every field of
RayJobSpec, RayClusterSpec, HeadGroupSpec, WorkerGroupSpec and AutoscalerOptions with its JSON type, the
enums, the int32 ranges and the required fields. Unknown fields are rejected (additionalProperties: false), so a
misspelt or invented field fails as it would against the CRD's structural schema.

Pod templates (head, workers, submitter) are core `PodTemplateSpec`s: here they are only objects; the test
validates each one as a core `PodTemplate` with kubernetes-validate --strict, the full Kubernetes schema.
"""

from __future__ import annotations

INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
NON_NEGATIVE_INT32 = {**INT32, "minimum": 0}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

# resource.Quantity as the CRDs write it: an integer or a string like "500m", "16Gi", "8".
QUANTITY = {
    "anyOf": [
        {"type": "integer"},
        {
            "type": "string",
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        },
    ]
}
RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
    },
}
SECURITY_CONTEXT = {  # corev1.SecurityContext, the fields a non-root container needs
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "allowPrivilegeEscalation": {"type": "boolean"},
        "capabilities": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "add": {"type": "array", "items": {"type": "string"}},
                "drop": {"type": "array", "items": {"type": "string"}},
            },
        },
        "privileged": {"type": "boolean"},
        "readOnlyRootFilesystem": {"type": "boolean"},
        "runAsGroup": {"type": "integer"},
        "runAsNonRoot": {"type": "boolean"},
        "runAsUser": {"type": "integer"},
        "seccompProfile": {
            "type": "object",
            "additionalProperties": False,
            "required": ["type"],
            "properties": {"type": {"type": "string"}, "localhostProfile": {"type": "string"}},
        },
    },
}
POD_TEMPLATE = {"type": "object"}  # validated separately as a core PodTemplate (see the module docstring)
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}

AUTOSCALER_OPTIONS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "resources": RESOURCES,
        "image": {"type": "string"},
        "imagePullPolicy": {"enum": ["Always", "Never", "IfNotPresent"]},
        "securityContext": SECURITY_CONTEXT,
        "idleTimeoutSeconds": INT32,
        "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
        "env": {"type": "array", "items": {"type": "object"}},
        "envFrom": {"type": "array", "items": {"type": "object"}},
        "volumeMounts": {"type": "array", "items": {"type": "object"}},
    },
}
# rayStartParams is map[string]string: `num-cpus: 0` (an integer) is rejected by the CRD, "0" is right.
RAY_START_PARAMS = STRING_MAP
HEAD_GROUP_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["template", "rayStartParams"],
    "properties": {
        "template": POD_TEMPLATE,
        "headService": {"type": "object"},
        "enableIngress": {"type": "boolean"},
        "rayStartParams": RAY_START_PARAMS,
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
    },
}
WORKER_GROUP_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"],
    "properties": {
        "suspend": {"type": "boolean"},
        "groupName": {"type": "string", "minLength": 1},
        "replicas": NON_NEGATIVE_INT32,
        "minReplicas": NON_NEGATIVE_INT32,
        "maxReplicas": NON_NEGATIVE_INT32,
        "idleTimeoutSeconds": INT32,
        "rayStartParams": RAY_START_PARAMS,
        "template": POD_TEMPLATE,
        "scaleStrategy": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"workersToDelete": {"type": "array", "items": {"type": "string"}}},
        },
        "numOfHosts": {**INT32, "minimum": 1},
    },
}
RAY_CLUSTER_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["headGroupSpec"],
    "properties": {
        "suspend": {"type": "boolean"},
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "autoscalerOptions": AUTOSCALER_OPTIONS,
        "headServiceAnnotations": STRING_MAP,
        "enableInTreeAutoscaling": {"type": "boolean"},
        "gcsFaultToleranceOptions": {"type": "object"},
        "headGroupSpec": HEAD_GROUP_SPEC,
        "rayVersion": {"type": "string", "pattern": r"^[0-9]+\.[0-9]+\.[0-9]+$"},
        "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP_SPEC},
    },
}
RAY_JOB_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "activeDeadlineSeconds": {**INT32, "minimum": 1},
        "backoffLimit": NON_NEGATIVE_INT32,
        "rayClusterSpec": RAY_CLUSTER_SPEC,
        "submitterPodTemplate": POD_TEMPLATE,
        "metadata": STRING_MAP,
        "clusterSelector": STRING_MAP,
        "submitterConfig": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"backoffLimit": NON_NEGATIVE_INT32},
        },
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "entrypoint": {"type": "string"},
        "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
        "entrypointResources": {"type": "string"},
        "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"},
        "ttlSecondsAfterFinished": NON_NEGATIVE_INT32,
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "suspend": {"type": "boolean"},
    },
    # KubeRay's own validation: a RayJob either brings a cluster or selects a running one.
    "anyOf": [{"required": ["rayClusterSpec"]}, {"required": ["clusterSelector"]}],
}


def _kind(kind: str, spec: dict) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


SCHEMAS: dict[str, dict] = {
    "RayJob": _kind("RayJob", RAY_JOB_SPEC),
    "RayCluster": _kind("RayCluster", RAY_CLUSTER_SPEC),
}


def pod_templates(obj: dict) -> list[tuple[str, dict]]:
    """(where, PodTemplateSpec) of every pod template in a RayJob or RayCluster."""
    spec = obj["spec"]
    found = []
    if obj["kind"] == "RayJob":
        if "submitterPodTemplate" in spec:
            found.append(("spec.submitterPodTemplate", spec["submitterPodTemplate"]))
        spec, prefix = spec.get("rayClusterSpec") or {}, "spec.rayClusterSpec"
    else:
        prefix = "spec"
    if "headGroupSpec" in spec:
        found.append((f"{prefix}.headGroupSpec.template", spec["headGroupSpec"]["template"]))
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        found.append((f"{prefix}.workerGroupSpecs[{i}].template", group["template"]))
    return found
