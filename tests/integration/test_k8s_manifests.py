"""The k8s/ manifests: every kustomization rendered by the real kustomize and validated offline.

- Rendering: the pinned upstream kustomize binary (scripts/install-kustomize.sh fetches it once into
  .cache/tools; $KUSTOMIZE names another). kubectl is not used: its dry-run needs an API server.
- Core kinds: kubernetes-validate --strict (Kubernetes' OpenAPI schemas, unknown fields rejected) at the oldest
  and the newest Kubernetes version we claim.
- KubeRay kinds: the JSON schema of tests/integration/kuberay_schema.py (written from KubeRay's ray.io/v1 API,
  which no registry package ships), and every pod template inside them as a strict core PodTemplate.
- Policies over every render: resources, probes, GPUs, image tags, non-root, and commands that name real CLI
  subcommands and config files that exist and resolve.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.integration.kuberay_schema import SCHEMAS, pod_templates

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RENDERS = ["base", "overlays/dev", "overlays/prod"]
OVERLAYS = ["overlays/dev", "overlays/prod"]
K8S_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
RAY_KINDS = {"RayJob", "RayCluster"}


@pytest.fixture(scope="session")
def kustomize() -> str:
    if os.environ.get("KUSTOMIZE"):
        return os.environ["KUSTOMIZE"]
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "install-kustomize.sh")], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"scripts/install-kustomize.sh failed:\n{out.stderr}"
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def rendered(kustomize) -> dict[str, list[dict]]:
    """kustomization folder under k8s/ -> the objects `kustomize build` renders from it."""
    result = {}
    for name in RENDERS:
        out = subprocess.run(
            [kustomize, "build", str(REPO / "k8s" / name)], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, f"kustomize build k8s/{name} failed:\n{out.stderr}"
        result[name] = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    return result


def constraint_version(package: str) -> str:
    text = (REPO / "requirements" / "constraints.txt").read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(package)}==(\S+)$", text, re.MULTILINE | re.IGNORECASE)
    assert match, f"{package} is not pinned in requirements/constraints.txt"
    return match.group(1)


def pod_specs(obj: dict) -> list[tuple[str, dict]]:
    """(where, PodSpec) of every pod the object makes: any mapping with a `containers` list, at any depth."""
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                found.append((path, node))
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(obj, f"{obj['kind']}/{obj['metadata']['name']}")
    return found


def containers(obj: dict) -> list[tuple[str, dict, dict]]:
    """(where, container, its PodSpec) of every container and init container of the object."""
    return [
        (f"{where}:{c['name']}", c, spec)
        for where, spec in pod_specs(obj)
        for c in [*spec.get("initContainers", []), *spec["containers"]]
    ]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def quantity(value) -> float:
    """A CPU or count quantity as a number ("500m" -> 0.5, "8" -> 8)."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


# --- schemas -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", RENDERS)
def test_core_kinds_pass_kubernetes_validate_strict(rendered, name, version):
    core = [o for o in rendered[name] if o["kind"] not in RAY_KINDS]
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"} <= {
        o["kind"] for o in core
    }
    for obj in core:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", RENDERS)
def test_kuberay_kinds_match_the_crd_fields_and_their_pod_templates_are_strict(rendered, name, version):
    ray = [o for o in rendered[name] if o["kind"] in RAY_KINDS]
    assert {o["kind"] for o in ray} == RAY_KINDS
    for obj in ray:
        jsonschema.Draft202012Validator(SCHEMAS[obj["kind"]]).validate(obj)
        for where, template in pod_templates(obj):
            wrapped = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": "t"},
                "template": template,
            }
            try:
                kubernetes_validate.validate(wrapped, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} {where}: {err.message}")


def test_the_kuberay_schema_rejects_what_the_crd_rejects(rendered):
    job = yaml.safe_load(yaml.safe_dump(one(rendered["base"], "RayJob")))
    validator = jsonschema.Draft202012Validator(SCHEMAS["RayJob"])
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    for broken in (
        {"shutdownAfterJobFinish": True},  # misspelt field
        {"backoffLimit": "2"},  # wrong type
        {"submissionMode": "K8sMode"},  # not in the enum
    ):
        assert not validator.is_valid({**job, "spec": {**job["spec"], **broken}}), broken
    head["rayStartParams"] = {"num-cpus": 0}  # map[string]string: must be "0"
    assert not validator.is_valid(job)


# --- policies ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RENDERS)
def test_every_container_has_requests_and_limits(rendered, name):
    for obj in rendered[name]:
        for where, c, _ in containers(obj):
            resources = c.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part, {})), (
                    f"{where}: {part} need cpu and memory"
                )
        autoscaler = obj.get("spec", {}).get("autoscalerOptions")
        if autoscaler:  # KubeRay adds this container to the head pod
            assert {"requests", "limits"} <= set(autoscaler.get("resources", {})), (
                "autoscalerOptions.resources"
            )


@pytest.mark.parametrize("name", RENDERS)
def test_gpu_requests_equal_limits(rendered, name):
    gpus = 0
    for obj in rendered[name]:
        for where, c, _ in containers(obj):
            requests, limits = c["resources"].get("requests", {}), c["resources"].get("limits", {})
            for key in {k for k in [*requests, *limits] if "gpu" in k}:
                assert str(requests.get(key)) == str(limits.get(key)), f"{where}: {key} requests != limits"
                gpus += 1
    assert gpus, "no GPU container: the training worker groups should request nvidia.com/gpu"


@pytest.mark.parametrize("name", RENDERS)
def test_every_image_is_pinned_to_a_tag(rendered, name):
    for obj in rendered[name]:
        for where, c, _ in containers(obj):
            image = c["image"]
            last = image.rsplit("/", 1)[-1]
            assert ":" in last or "@sha256:" in image, f"{where}: image {image} has no tag"
            assert not last.endswith(":latest"), f"{where}: image {image} uses latest"


@pytest.mark.parametrize("name", RENDERS)
def test_everything_runs_as_non_root_without_privileges(rendered, name):
    for obj in rendered[name]:
        for where, c, pod in containers(obj):
            pod_ctx, ctx = pod.get("securityContext", {}), c.get("securityContext", {})
            assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot"
            assert ctx.get("runAsUser", pod_ctx.get("runAsUser", 1)) != 0, f"{where}: runAsUser 0"
            assert ctx.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities.drop [ALL]"
            assert not ctx.get("privileged"), f"{where}: privileged"


@pytest.mark.parametrize("name", RENDERS)
def test_the_api_deployment_is_probed_hardened_and_configured(rendered, name):
    objs = rendered[name]
    deployment = one(objs, "Deployment", "biomedgpt-api")
    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert "startupProbe" in api
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in api["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a read-only root needs a writable /tmp"
    # The key comes from a Secret that is never committed: referenced, not rendered.
    (key,) = [e for e in api["env"] if e["name"] == "BIOMEDGPT_API_KEY"]
    assert "secretKeyRef" in key["valueFrom"]
    assert not [o for o in objs if o["kind"] == "Secret"], "no Secret values in the repository"
    # Serve config from the generated ConfigMap: bind every interface, on the port the probes use.
    (ref,) = [e["configMapRef"]["name"] for e in api["envFrom"]]
    config = one(objs, "ConfigMap", ref)["data"]
    assert config["BIOMEDGPT_SERVE_HOST"] == "0.0.0.0"
    (port,) = api["ports"]
    assert int(config["BIOMEDGPT_SERVE_PORT"]) == port["containerPort"]
    service = one(objs, "Service", "biomedgpt-api")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    pdb = one(objs, "PodDisruptionBudget", "biomedgpt-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one(objs, "HorizontalPodAutoscaler", "biomedgpt-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("name", RENDERS)
def test_the_serve_config_map_is_a_valid_serve_config_for_the_container(rendered, name):
    import dataclasses

    from biomedgpt.serve.config import ServeConfig, load_serve_config

    objs = rendered[name]
    (api,) = one(objs, "Deployment", "biomedgpt-api")["spec"]["template"]["spec"]["containers"]
    (ref,) = [e["configMapRef"]["name"] for e in api["envFrom"]]
    environ = dict(one(objs, "ConfigMap", ref)["data"])
    fields = {f.name for f in dataclasses.fields(ServeConfig)}
    for key in environ:  # the server ignores BIOMEDGPT_SERVE_* names that are not fields: catch typos here
        if key.startswith("BIOMEDGPT_SERVE_"):
            assert key.removeprefix("BIOMEDGPT_SERVE_").lower() in fields, f"{key}: no such ServeConfig field"
    config = load_serve_config(environ={**environ, "BIOMEDGPT_API_KEY": "from-the-secret"})
    assert (config.host, config.engine, str(config.model)) == ("0.0.0.0", "onnxruntime", "/models/biomedgpt")
    assert config.port == api["ports"][0]["containerPort"] and config.api_key == "from-the-secret"
    # ONNX Runtime sizes its thread pool from the node's cores unless told the container's share.
    assert config.num_threads == quantity(api["resources"]["limits"]["cpu"])


def test_dev_is_small_and_prod_is_larger(rendered):
    def api(name):
        objs = rendered[name]
        deployment = one(objs, "Deployment", "biomedgpt-api")
        limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        return (
            deployment["spec"]["replicas"],
            one(objs, "HorizontalPodAutoscaler")["spec"],
            quantity(limits["cpu"]),
        )

    dev_replicas, dev_hpa, dev_cpu = api("overlays/dev")
    prod_replicas, prod_hpa, prod_cpu = api("overlays/prod")
    assert dev_replicas == 1 and prod_replicas > dev_replicas and dev_cpu < prod_cpu
    assert prod_hpa["minReplicas"] >= prod_replicas and prod_hpa["maxReplicas"] > dev_hpa["maxReplicas"]
    for name, namespace in (("overlays/dev", "biomedgpt-dev"), ("overlays/prod", "biomedgpt")):
        namespaces = {o["metadata"].get("namespace") for o in rendered[name] if o["kind"] != "Namespace"}
        assert namespaces == {namespace}


# --- training: KubeRay ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RENDERS)
def test_ray_version_matches_the_constraints_and_the_image_tag(rendered, name):
    ray = constraint_version("ray")
    for obj in (o for o in rendered[name] if o["kind"] in RAY_KINDS):
        spec = obj["spec"].get("rayClusterSpec", obj["spec"])
        assert spec["rayVersion"] == ray, f"{obj['kind']}: rayVersion {spec['rayVersion']} != ray=={ray}"
        for where, c, _ in containers(obj):
            assert f"ray{ray}" in c["image"].rsplit(":", 1)[-1], f"{where}: image tag should say ray{ray}"


@pytest.mark.parametrize("name", RENDERS)
def test_ray_pods_have_shared_memory_and_groups_are_consistent(rendered, name):
    for obj in (o for o in rendered[name] if o["kind"] in RAY_KINDS):
        for where, template in pod_templates(obj):
            if "submitterPodTemplate" in where:
                continue
            pod = template["spec"]
            shm = [v for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
            mounted = {
                m["name"] for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/dev/shm"
            }
            assert {v["name"] for v in shm} & mounted, (
                f"{where}: /dev/shm must be an emptyDir of medium Memory"
            )
        spec = obj["spec"].get("rayClusterSpec", obj["spec"])
        for group in spec["workerGroupSpecs"]:
            replicas = group.get("replicas", 0)
            assert group["minReplicas"] <= replicas <= group["maxReplicas"], group["groupName"]
    job = one(rendered[name], "RayJob")
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["backoffLimit"] >= 0


def check_biomedgpt_command(argv: list[str], where: str) -> list[str]:
    """Assert `argv` runs an existing `biomedgpt` subcommand whose -c files exist; return the -c files."""
    from biomedgpt.cli import COMMANDS

    assert argv[0] == "biomedgpt", f"{where}: {argv}"
    assert argv[1] in COMMANDS, f"{where}: `biomedgpt {argv[1]}` is not in biomedgpt.cli.COMMANDS"
    files = [argv[i + 1] for i, arg in enumerate(argv) if arg in ("-c", "--config")]
    for file in files:
        assert (REPO / file).is_file(), f"{where}: {file} does not exist in the repository"
    return files


@pytest.mark.parametrize("name", RENDERS)
def test_container_commands_name_real_subcommands(rendered, name):
    for obj in rendered[name]:
        for where, c, _ in containers(obj):
            argv = [*c.get("command", []), *c.get("args", [])]
            if argv and argv[0] == "biomedgpt":
                check_biomedgpt_command(argv, where)


@pytest.mark.parametrize("name", RENDERS)
def test_the_rayjob_entrypoint_resolves_and_fits_its_cluster(rendered, name):
    from biomedgpt.config import load_config
    from biomedgpt.run_config import RunConfig

    job = one(rendered[name], "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    files = check_biomedgpt_command(argv, f"{name} RayJob entrypoint")
    assert argv[1] == "pretrain" and any(f.startswith("configs/pretrain/") for f in files)
    assert any(f.startswith("configs/cluster/") for f in files)
    overrides = [arg for arg in argv[2:] if "=" in arg and not arg.startswith("-")]
    cfg = load_config(RunConfig, [REPO / f for f in files], overrides)
    assert cfg.dist.launcher == "ray" and cfg.dist.address == "auto", "attach to the RayJob's own cluster"
    # Ray Train's workers must fit the worker pods: one GPU each, cpus_per_worker CPUs each.
    groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = sum(g["replicas"] * int(limits(g).get("nvidia.com/gpu", 0)) for g in groups)
    assert cfg.dist.use_gpu and cfg.dist.num_workers == gpus, f"{cfg.dist.num_workers} workers on {gpus} GPUs"
    for g in groups:
        per_pod = int(limits(g)["nvidia.com/gpu"])
        assert per_pod * cfg.dist.cpus_per_worker <= quantity(limits(g)["cpu"]), f"{g['groupName']}: CPUs"
    # Run state on the volume every Ray pod mounts.
    shared = {m["mountPath"] for m in groups[0]["template"]["spec"]["containers"][0]["volumeMounts"]}
    for path in (cfg.train.output_dir, cfg.dist.storage, *cfg.data.shards):
        assert any(path.startswith(mount + "/") for mount in shared - {"/dev/shm"}), f"{path} is not shared"


def limits(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]["resources"]["limits"]
