"""Engine configs and backends that are absent on this machine."""

from __future__ import annotations

import importlib.util

import pytest

from sapphire.llm.engines import (
    EngineError,
    LlamaCppConfig,
    TransformersConfig,
    VllmConfig,
    create_engine,
    engine_config_from_dict,
)


def test_engine_config_from_dict_selects_the_kind() -> None:
    assert isinstance(engine_config_from_dict({}), LlamaCppConfig)
    cfg = engine_config_from_dict({"kind": "vllm", "model": "org/m-AWQ"})
    assert isinstance(cfg, VllmConfig) and cfg.gpu_memory_utilization == 0.7
    assert isinstance(engine_config_from_dict({"kind": "transformers"}), TransformersConfig)


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "openai"},
        {"kind": "llamacpp", "n_threads": 0},
        {"kind": "llamacpp", "unknown": 1},
        {"kind": "vllm", "gpu_memory_utilization": 1.5},
        {"kind": "llamacpp", "sampling": {"max_tokens": 100000}},
    ],
)
def test_engine_config_from_dict_rejects_bad_input_with_a_clear_error(
    data: dict[str, object],
) -> None:
    with pytest.raises(EngineError):
        engine_config_from_dict(data)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_engine_without_vllm_raises_engine_error() -> None:
    with pytest.raises(EngineError, match="vllm"):
        create_engine(VllmConfig())


def test_llamacpp_engine_with_missing_file_raises_engine_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("llama_cpp")
    with pytest.raises(EngineError, match="not found"):
        create_engine(LlamaCppConfig(model_path=str(tmp_path / "missing.gguf")))


def test_sapphire_imports_without_llm_backends() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['llama_cpp'] = None; sys.modules['vllm'] = None;"
        "import sapphire.llm.engines, sapphire.llm.client, sapphire.agents.llm_agent"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
