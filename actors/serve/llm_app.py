"""App builders for Serve YAML (``import_path: actors.serve.llm_app:build_app``).

``build_app(args)`` serves decisions with the engine ``args["engine"]["kind"]`` names:
``llamacpp`` (CPU, the default) or ``vllm`` / ``transformers`` (GPU: the deployment asks for
one GPU unless the YAML's ``ray_actor_options`` say otherwise). ``build_openai_app(args)``
is the Ray Serve LLM route: an OpenAI-compatible vLLM server; Ray's LLM package (and vLLM)
are imported only when it is called.
"""

from __future__ import annotations

import importlib
from typing import Any

from ray.serve import Application

from actors.serve.llm_deployment import LlmDecisionDeployment
from sapphire.llm.engines import LlamaCppConfig, engine_config_from_dict

DEFAULT_OPENAI_MODEL = "Qwen/Qwen2.5-1.5B-Instruct-AWQ"


def build_app(args: dict[str, Any] | None = None) -> Application:
    args = dict(args or {})
    engine = dict(args.get("engine") or {})
    config = engine_config_from_dict(engine)  # fail at build time, not in the replica
    max_batch_size = int(args.get("max_batch_size", 8))
    # Below max_batch_size concurrent requests per replica a batch can never fill.
    options: dict[str, Any] = {"max_ongoing_requests": max(16, 2 * max_batch_size)}
    if not isinstance(config, LlamaCppConfig):
        options["ray_actor_options"] = {"num_cpus": 1, "num_gpus": 1}
    else:
        options["ray_actor_options"] = {"num_cpus": max(1, min(config.n_threads, 2))}
    if "ray_actor_options" in args:
        options["ray_actor_options"] = dict(args["ray_actor_options"])
    if "autoscaling_config" in args:
        options["autoscaling_config"] = dict(args["autoscaling_config"])
    deployment: Any = LlmDecisionDeployment  # a serve.Deployment at run time
    app: Application = deployment.options(**options).bind(
        engine=engine,
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=float(args.get("batch_wait_timeout_s", 0.02)),
    )
    return app


def openai_llm_config(args: dict[str, Any]) -> Any:
    """A ``ray.serve.llm.LLMConfig`` for a 4-bit model with defaults suited to decisions."""
    llm = importlib.import_module("ray.serve.llm")
    engine_kwargs = {"gpu_memory_utilization": 0.7, "max_model_len": 2048}
    engine_kwargs.update(args.get("engine_kwargs") or {})
    return llm.LLMConfig(
        model_loading_config={
            "model_id": args.get("model_id", "sapphire-decider"),
            "model_source": args.get("model_source", DEFAULT_OPENAI_MODEL),
        },
        engine_kwargs=engine_kwargs,
        deployment_config=args.get(
            "deployment_config",
            {"autoscaling_config": {"min_replicas": 1, "max_replicas": 2}},
        ),
        accelerator_type=args.get("accelerator_type"),
    )


def build_openai_app(args: dict[str, Any] | None = None) -> Application:
    """Ray Serve LLM (vLLM) behind the OpenAI API; decisions via ``response_format``."""
    llm = importlib.import_module("ray.serve.llm")
    app: Application = llm.build_openai_app({"llm_configs": [openai_llm_config(dict(args or {}))]})
    return app
