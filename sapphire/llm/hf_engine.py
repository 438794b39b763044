"""transformers + bitsandbytes engine: the second GPU route (NF4 4-bit weights).

Unlike llama.cpp and vLLM it has no grammar here, so its outputs rely on the parser alone;
the malformed-JSON count makes that visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sapphire.llm.engines import Generation, TransformersConfig, import_gpu_module
from sapphire.llm.prompt import DecisionPrompt, SamplingConfig


class TransformersEngine:
    def __init__(self, config: TransformersConfig) -> None:
        torch = import_gpu_module("torch")
        transformers = import_gpu_module("transformers")
        self.config = config
        self.model_id = config.model_id or config.model
        self.sampling: SamplingConfig = config.sampling
        self._torch = torch
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(config.model)
        # Left padding keeps every sequence's last prompt token at the end of the batch row.
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        kwargs: dict[str, Any] = {"device_map": config.device}
        if config.load_in_4bit:
            import_gpu_module("bitsandbytes")
            kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.float16,
            )
        else:
            kwargs["torch_dtype"] = torch.float16
        self._model = transformers.AutoModelForCausalLM.from_pretrained(config.model, **kwargs)
        self._model.eval()

    def generate_batch_detailed(self, prompts: Sequence[DecisionPrompt]) -> list[Generation]:
        if not prompts:
            return []
        texts = [
            self._tokenizer.apply_chat_template(
                p.messages(), tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        enc = self._tokenizer(texts, return_tensors="pt", padding=True).to(self._model.device)
        sampling = self.sampling
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_tokens,
            "do_sample": sampling.temperature > 0,
            "pad_token_id": self._tokenizer.pad_token_id,
        }
        if sampling.temperature > 0:
            self._torch.manual_seed(sampling.seed)
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
        with self._torch.inference_mode():
            out = self._model.generate(**enc, **gen_kwargs)
        prompt_len = enc["input_ids"].shape[1]
        result = []
        for i, row in enumerate(out):
            new = row[prompt_len:]
            n_new = int((new != self._tokenizer.pad_token_id).sum())
            result.append(
                Generation(
                    text=self._tokenizer.decode(new, skip_special_tokens=True),
                    prompt_tokens=int(enc["attention_mask"][i].sum()),
                    completion_tokens=n_new,
                )
            )
        return result

    def generate_batch(self, prompts: Sequence[DecisionPrompt]) -> list[str]:
        return [g.text for g in self.generate_batch_detailed(prompts)]
