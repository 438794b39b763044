"""KubeRay manifests, validated offline the way KubeRay's own CI does (kubeconform over the CRDs'
openAPIV3Schema, strict): the vendored CRDs (kuberay/crds/, Apache-2.0) as JSON schema with
unknown fields forbidden, and serveConfigV2 parsed by Ray Serve's own ServeDeploySchema.
The manifests are rendered by scripts/render_kuberay.py (re-run it when serve_configs/ change),
and the config their jobs run (configs/kubernetes.yaml) is loaded by Sapphire's own loader."""

from __future__ import annotations

import copy
import importlib.util
import shlex
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from sapphire.config.system import load_config

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "kuberay"
CRDS = {"RayCluster": "rayclusters", "RayService": "rayservices", "RayJob": "rayjobs"}
MANIFESTS = ["raycluster.yaml", "rayservice.yaml", "rayservice-cpu.yaml", "rayjob.yaml"]
SERVE_SOURCES = {"rayservice.yaml": "llm_gpu.yaml", "rayservice-cpu.yaml": "llm_cpu.yaml"}


def _strict(schema: Any) -> Any:
    """kubeconform's -strict: an object schema that lists its properties allows no others
    (Kubernetes would prune an unknown field silently; a typo must fail here instead)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    # validate() would meta-check this multi-megabyte schema on every call (seconds each)
    return jsonschema.Draft202012Validator(_schema(kind))


def _schema(kind: str) -> dict[str, Any]:
    path = KUBERAY / "crds" / f"ray.io_{CRDS[kind]}.yaml"
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = _strict(v1["schema"]["openAPIV3Schema"])
    return schema


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((KUBERAY / name).read_text())
    return doc


def _cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    found: dict[str, Any] = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
    return found


def test_vendored_crds_carry_their_licence() -> None:
    assert "Apache License" in (KUBERAY / "crds" / "LICENSE").read_text()
    for plural in CRDS.values():
        crd = (KUBERAY / "crds" / f"ray.io_{plural}.yaml").read_text(encoding="utf-8")
        assert f"name: {plural}.ray.io" in crd


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_against_its_crd(name: str) -> None:
    doc = _load(name)
    assert doc["apiVersion"] == "ray.io/v1"
    _validator(doc["kind"]).validate(doc)


@pytest.mark.parametrize("name", MANIFESTS)
def test_cluster_layout_ports_and_security(name: str) -> None:
    spec = _cluster_spec(_load(name))
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    # KubeRay starts the autoscaler sidecar without --gcs-address: it looks for the GCS on the
    # pod's 6379 (kuberay#1644), so a `port` here leaves the cluster unable to scale. Redis is
    # the sapphire-redis Service, never a process in the head pod: nothing else is on 6379.
    assert "port" not in head["rayStartParams"]
    head_ports = {
        p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]
    }
    assert head_ports["gcs-server"] == 6379
    assert spec["enableInTreeAutoscaling"] is True and spec["authOptions"]["mode"] == "token"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert groups["cpu-workers"]["minReplicas"] >= 1
    for group in [head, *groups.values()]:
        pod = group["template"]["spec"]
        for container in pod["containers"]:
            assert container["securityContext"]["runAsNonRoot"] is True
            image = container["image"]
            assert ":" in image and not image.endswith(":latest")
            env = {e["name"]: e for e in container["env"]}
            # nothing reads REDIS_HOST (the host is configs/kubernetes.yaml's redis.host); the
            # password is read from the variable that config's redis.password_env names
            assert "REDIS_HOST" not in env
            secret = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert secret == {"name": "sapphire-redis", "key": "password"}
            # the LLM app's builder leaves what is not up yet to the autoscaler (llm_app.py)
            assert env["SAPPHIRE_CLUSTER_AUTOSCALES"]["value"] == "1"
    if "gpu-workers" in groups:
        gpu = groups["gpu-workers"]
        limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert str(limits["nvidia.com/gpu"]) == gpu["rayStartParams"]["num-gpus"] == "1"
        assert gpu["minReplicas"] == 0 < gpu["maxReplicas"]


@pytest.mark.parametrize("name", sorted(SERVE_SOURCES))
def test_service_embeds_the_serve_config(name: str) -> None:
    embedded = yaml.safe_load(_load(name)["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)  # Ray Serve's own parser
    source = yaml.safe_load((REPO / "serve_configs" / SERVE_SOURCES[name]).read_text())
    assert embedded == source, f"{name} drifted from serve_configs/{SERVE_SOURCES[name]}"


def test_gpu_service_has_gpu_workers_for_its_gpu_replicas() -> None:
    doc = _load("rayservice.yaml")
    serve = yaml.safe_load(doc["spec"]["serveConfigV2"])
    gpus = [
        d["ray_actor_options"].get("num_gpus", 0)
        for app in serve["applications"]
        for d in app["deployments"]
    ]
    groups = {g["groupName"] for g in _cluster_spec(doc)["workerGroupSpecs"]}
    assert max(gpus) >= 1 and "gpu-workers" in groups


@pytest.mark.parametrize("name", sorted(SERVE_SOURCES))
def test_services_set_the_initializing_timeout_not_the_deprecated_thresholds(name: str) -> None:
    # serviceUnhealthySecondThreshold / deploymentUnhealthySecondThreshold are still in the
    # CRD schema (so it passes them) but KubeRay reads neither (kuberay#1685)
    doc = _load(name)
    deprecated = {"serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold"}
    assert not deprecated & set(doc["spec"])
    assert doc["metadata"]["annotations"]["ray.io/initializing-timeout"] == "15m"


def test_rayjob_runs_the_main_job() -> None:
    spec = _load("rayjob.yaml")["spec"]
    entrypoint = spec["entrypoint"]
    # KubeRay pastes the entrypoint unquoted into the submitter's shell line
    # (`ray job submit ... -- <entrypoint> ; ...`): an operator outside quotes ends the
    # submit there and runs the rest in the submitter pod (`cd /app && python ...` did)
    lexer = shlex.shlex(entrypoint, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    assert not {"&&", "||", ";", "|", "&"} & set(words), words
    # `ray job submit` re-joins those words with shlex.join: the head runs this very line
    assert words == [
        "bash",
        "-c",
        "cd /app && python -m actors.main --config configs/kubernetes.yaml",
    ]
    assert shlex.split(shlex.join(words)) == words
    assert (REPO / "configs" / "kubernetes.yaml").is_file()
    assert spec["shutdownAfterJobFinishes"] is True
    yaml.safe_load(spec["runtimeEnvYAML"])


def test_the_kubernetes_config_reaches_the_redis_service_with_the_secrets_password() -> None:
    config = load_config(REPO / "configs" / "kubernetes.yaml")  # the product's own loader
    kwargs = config.redis.client_kwargs(environ={"REDIS_PASSWORD": "from-the-secret"})
    assert kwargs["host"] == "sapphire-redis" and kwargs["port"] == 6379
    assert kwargs["password"] == "from-the-secret"
    # apart from Redis it is the demo, so the RayJob runs what `sapphire run` runs locally
    k8s = yaml.safe_load((REPO / "configs" / "kubernetes.yaml").read_text())
    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    assert k8s.pop("redis") == {"host": "sapphire-redis", "password_env": "REDIS_PASSWORD"}
    assert k8s == demo


def _render_script() -> ModuleType:
    path = REPO / "scripts" / "render_kuberay.py"
    spec = importlib.util.spec_from_file_location("render_kuberay", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rendering_reproduces_the_committed_manifests() -> None:
    # a hand edit, or a serve_configs/ change not re-rendered, fails here; rendering twice
    # gives the same text (re-running the script changes nothing)
    render = _render_script().render
    rendered = render()
    assert sorted(rendered) == sorted(MANIFESTS)
    for name, text in rendered.items():
        assert (KUBERAY / name).read_text() == text, f"{name}: run scripts/render_kuberay.py"
    assert render() == rendered


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "workerGroupSpecs", 0, "maxReplica"), 3),  # typo
        (("spec", "workerGroupSpecs", 0, "minReplicas"), "one"),  # wrong type
        (("spec", "authOptions", "mode"), "password"),  # not in the enum
    ],
)
def test_the_validation_catches_mistakes(path: tuple[Any, ...], value: Any) -> None:
    doc = copy.deepcopy(_load("raycluster.yaml"))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        _validator("RayCluster").validate(doc)
