"""vLLM engine for the GPU path: 4-bit weights, continuous batching, JSON-schema decoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sapphire.llm.decision import decision_json_schema
from sapphire.llm.engines import Generation, VllmConfig, import_gpu_module
from sapphire.llm.prompt import DecisionPrompt, SamplingConfig


class VllmEngine:
    """Offline ``vllm.LLM``; one ``chat`` call per batch (vLLM schedules the sequences)."""

    def __init__(self, config: VllmConfig) -> None:
        vllm = import_gpu_module("vllm")
        sampling_params = import_gpu_module("vllm.sampling_params")
        self.config = config
        self.model_id = config.model_id or config.model
        self.sampling: SamplingConfig = config.sampling
        kwargs: dict[str, Any] = {
            "model": config.model,
            "gpu_memory_utilization": config.gpu_memory_utilization,
            "max_model_len": config.max_model_len,
            "max_num_seqs": config.max_num_seqs,
            "seed": config.sampling.seed,
        }
        if config.quantization is not None:
            kwargs["quantization"] = config.quantization
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
