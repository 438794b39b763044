"""Engine configs and backends that are absent on this machine."""

from __future__ import annotations

import importlib.util

import pytest

from sapphire.llm.engines import (
    EngineConfigError,
    EngineError,
    LlamaCppConfig,
    TransformersConfig,
    VllmConfig,
    create_engine,
    engine_config_from_dict,
)


def test_engine_config_from_dict_selects_the_kind() -> None:
    assert isinstance(engine_config_from_dict({}), LlamaCppConfig)
    cfg = engine_config_from_dict(
        {"kind": "vllm", "model": "org/m-AWQ", "knowledge_cutoff": "2025-01-31"}
    )
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
        create_engine(
            LlamaCppConfig(
                model_path=str(tmp_path / "missing.gguf"),
                model_id="missing",
                knowledge_cutoff="2024-01-01",
            )
        )


def test_sapphire_imports_without_llm_backends() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['llama_cpp'] = None; sys.modules['vllm'] = None;"
        "import sapphire.llm.engines, sapphire.llm.client, sapphire.agents.llm_agent"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # another model kept SmolLM2's cutoff and id: its later events never flagged, its
        # decisions cached under the packaged model's name
        ({"model_path": "/m/llama-70b.gguf"}, "knowledge_cutoff .* is required with model_path"),
        (
            {"model_path": "/m/llama-70b.gguf", "knowledge_cutoff": "2024-12-01"},
            "model_id is required with model_path",
        ),
        ({"kind": "vllm", "model": "Qwen/Qwen3-8B-AWQ"}, "knowledge_cutoff .* is required"),
        # both passed every check, then failed where the engine was built (a replica, or the
        # regime classifier minutes into a run) or at every request
        ({"kv_type": "q8_0", "flash_attn": False}, "q8_0 needs flash_attn"),
        ({"n_ctx": 256}, "n_ctx"),
    ],
)
def test_engine_configs_that_could_only_fail_later_are_refused(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(EngineConfigError, match=message):
        engine_config_from_dict(data)


def test_the_packaged_model_fills_in_its_own_cutoff_and_id() -> None:
    cfg = engine_config_from_dict({})
    assert isinstance(cfg, LlamaCppConfig)
    assert (cfg.knowledge_cutoff, cfg.model_id) == ("2024-11-01", "SmolLM2-135M-Instruct-Q4_1")
