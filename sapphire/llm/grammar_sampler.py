"""Greedy decoding under a GBNF grammar that checks the argmax before masking the vocabulary.

Applying a grammar to all ~49k candidates costs milliseconds per token; the model's own top
token is usually allowed (the prompt asks for this JSON). So the argmax is tested alone
first, then (about one token in five here) the next best ``TOP_K`` in one call, and the
full grammar mask only when none of those is allowed, which is the "sample first, then
check" order of llama.cpp's common sampler. The result is the token greedy-with-grammar
would pick: the allowed token of highest logit, the lowest id among equals (a tie at the
edge of the top ``TOP_K`` goes to the full mask).
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

TOP_K = 512  # next-best candidates checked in one call before the full-vocabulary mask
_TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


class GreedyGrammarSampler:
    def __init__(self, lc: Any, internals: Any, vocab: Any, gbnf: str, root: str) -> None:
        self._lc = lc
        self._n_vocab = int(lc.llama_vocab_n_tokens(vocab))
        self._grammar = lc.llama_sampler_init_grammar(
            vocab, gbnf.encode("utf-8"), root.encode("utf-8")
        )
        if not self._grammar:
            raise ValueError("llama.cpp rejected the grammar")
        self._one_data = (lc.llama_token_data * 1)()
        self._one = lc.llama_token_data_array(
            data=ctypes.cast(self._one_data, lc.llama_token_data_p),
            size=1,
            selected=-1,
            sorted=False,
        )
        # llama_token_data as numpy fields (the layout llama_cpp's own arrays use): filled
        # and read a column at a time
        self._top_np = np.zeros(TOP_K, dtype=_TOKEN_DATA)
        self._top = lc.llama_token_data_array(
            data=self._top_np.ctypes.data_as(lc.llama_token_data_p),
            size=TOP_K,
            selected=-1,
            sorted=False,
        )
        self._full = internals.LlamaTokenDataArray(n_vocab=self._n_vocab)
        self.full_masks = 0
        self.top_checks = 0

    def sample(self, ctx: Any, index: int) -> int:
        lc = self._lc
        ptr = lc.llama_get_logits_ith(ctx, index)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
        token = int(logits.argmax())
        cand = self._one_data[0]
        cand.id, cand.logit, cand.p = token, 0.0, 0.0
        self._one.size, self._one.selected, self._one.sorted = 1, -1, False
        lc.llama_sampler_apply(self._grammar, ctypes.byref(self._one))
        if math.isinf(self._one_data[0].logit):
            found = self._best_of_top(logits)
            if found is None:
                self.full_masks += 1
                self._full.copy_logits(logits)
                lc.llama_sampler_apply(self._grammar, ctypes.byref(self._full.candidates))
                found = int(self._full.candidates_data.logit.argmax())
            token = found
        lc.llama_sampler_accept(self._grammar, token)
        return token

    def _best_of_top(self, logits: np.ndarray) -> int | None:
        """The allowed token of highest logit among the top ``TOP_K`` (lowest id among
        equals), or None: none allowed, or the winner ties the edge of the top, where a
        token outside it could win the tie."""
        self.top_checks += 1
        top = np.argpartition(logits, -TOP_K)[-TOP_K:]
        values = logits[top]
        order = np.lexsort((top, -values))  # logit descending, then id ascending
        top, values = top[order], values[order]
        data = self._top_np
        data["id"], data["logit"], data["p"] = top, values, 0.0
        self._top.size, self._top.selected, self._top.sorted = TOP_K, -1, False
        self._lc.llama_sampler_apply(self._grammar, ctypes.byref(self._top))
        allowed = np.flatnonzero(~np.isinf(data["logit"]))
        if not allowed.size:
            return None
        i = int(allowed[0])
        return None if values[i] == values[-1] else int(top[i])

    def close(self) -> None:
        if self._grammar:
            self._lc.llama_sampler_free(self._grammar)
            self._grammar = None
