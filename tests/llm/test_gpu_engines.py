"""GPU engines (vLLM, transformers + bitsandbytes): run only where CUDA and a model exist.

Set ``SAPPHIRE_GPU_MODEL`` to a locally available 4-bit checkpoint (AWQ/GPTQ for vLLM) and
``SAPPHIRE_GPU_HF_MODEL`` to a small chat model for the transformers route.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from sapphire.llm.decision import parse_decision
from sapphire.llm.engines import TransformersConfig, VllmConfig, create_engine
from sapphire.llm.prompt import MarketFeatures, build_prompt


def _cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not _cuda(), reason="CUDA is not available"),
]

PROMPTS = [
    build_prompt(
        MarketFeatures(
            symbol="BTCUSDT", ts_event_ns=i, mid=61600 + i, spread_bps=0.2, imbalance=0.1 * i
        )
    )
    for i in range(8)
]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
@pytest.mark.skipif("SAPPHIRE_GPU_MODEL" not in os.environ, reason="no local 4-bit model")
def test_vllm_engine_batch_gives_schema_valid_decisions() -> None:
    engine = create_engine(VllmConfig(model=os.environ["SAPPHIRE_GPU_MODEL"]))
    texts = engine.generate_batch(PROMPTS)
    assert len(texts) == len(PROMPTS)
    assert all(parse_decision(t).ok for t in texts)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="no bitsandbytes")
@pytest.mark.skipif("SAPPHIRE_GPU_HF_MODEL" not in os.environ, reason="no local HF model")
def test_transformers_4bit_engine_answers_every_prompt() -> None:
    engine = create_engine(TransformersConfig(model=os.environ["SAPPHIRE_GPU_HF_MODEL"]))
    gens = engine.generate_batch_detailed(PROMPTS)
    assert len(gens) == len(PROMPTS) and all(g.completion_tokens > 0 for g in gens)
