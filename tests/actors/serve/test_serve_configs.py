"""The Serve YAMLs are valid Serve (and KubeRay serveConfigV2) documents."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from actors.serve.config_check import ServeConfigError, validate_serve_config
from sapphire.llm.engines import LlamaCppConfig, VllmConfig, engine_config_from_dict

CONFIGS = Path(__file__).resolve().parents[3] / "serve_configs"


def _load(name: str) -> ServeDeploySchema:
    return validate_serve_config(yaml.safe_load((CONFIGS / name).read_text()))


@pytest.mark.parametrize("name", ["llm_cpu.yaml", "llm_gpu.yaml"])
def test_serve_config_validates_with_autoscaling_and_batch_sized_concurrency(name: str) -> None:
    schema = _load(name)
    (app,) = schema.applications
    assert app.import_path == "actors.serve.llm_app:build_app"
    (dep,) = app.deployments
    auto = dep.autoscaling_config
    assert isinstance(auto, dict)
    assert 1 <= auto["min_replicas"] < auto["max_replicas"]
    assert auto["target_ongoing_requests"] > 0
    # batches only fill when a replica accepts at least max_batch_size requests at once
    assert dep.max_ongoing_requests >= app.args["max_batch_size"]
    opts = dep.ray_actor_options
    opts = opts if isinstance(opts, dict) else opts.model_dump(exclude_unset=True)
    engine = engine_config_from_dict(app.args["engine"])  # the args the builder receives
    if name == "llm_gpu.yaml":
        assert isinstance(engine, VllmConfig) and engine.gpu_memory_utilization == 0.7
        assert opts["num_gpus"] == 1
    else:
        assert isinstance(engine, LlamaCppConfig)
        assert (opts.get("num_gpus") or 0) == 0 and opts["num_cpus"] == 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_ongoing_requestz", 16),
        ("max_ongoing_requests", 0),
        ("autoscaling_config", {"min_replicas": 9, "max_replicas": 4}),
        ("ray_actor_options", {"num_gpuz": 1}),
    ],
)
def test_serve_config_with_a_typo_or_bad_value_is_rejected(key: str, value: object) -> None:
    data = yaml.safe_load((CONFIGS / "llm_cpu.yaml").read_text())
    data["applications"][0]["deployments"][0][key] = value
    with pytest.raises(ServeConfigError):
        validate_serve_config(data)


@pytest.mark.parametrize(
    ("engine", "message"),
    [({"n_ctxx": 4096}, "n_ctxx"), ({"kv_type": "q8_0", "flash_attn": False}, "flash_attn")],
)
def test_the_apps_args_are_checked_with_the_document(
    engine: dict[str, object], message: str
) -> None:
    # a typo in the app's args, or an engine no replica can build, passed the check and
    # surfaced at deploy, in the replica's log
    data = yaml.safe_load((CONFIGS / "llm_cpu.yaml").read_text())
    data["applications"][0]["args"]["engine"].update(engine)
    with pytest.raises(ServeConfigError, match=message):
        validate_serve_config(data)


def test_build_app_accepts_the_yaml_args_without_a_cluster() -> None:
    from actors.serve.llm_app import build_app

    for name in ("llm_cpu.yaml", "llm_gpu.yaml"):
        args = yaml.safe_load((CONFIGS / name).read_text())["applications"][0]["args"]
        app = build_app(args)
        assert app is not None
    with pytest.raises(ValueError, match="unknown engine kind"):
        build_app({"engine": {"kind": "gpt-9"}})
