"""Greedy decoding under a GBNF grammar that checks the argmax before masking the vocabulary.

Applying a grammar to all ~49k candidates costs milliseconds per token; the model's own top
token is almost always allowed (the prompt asks for this JSON). So the argmax is tested
alone first and the full grammar mask is applied only when it is rejected, which is the
"sample first, then check" order of llama.cpp's common sampler. The result is the same
token greedy-with-grammar would pick.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np


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
        self._full = internals.LlamaTokenDataArray(n_vocab=self._n_vocab)
        self.full_masks = 0

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
            self.full_masks += 1
            self._full.copy_logits(logits)
            lc.llama_sampler_apply(self._grammar, ctypes.byref(self._full.candidates))
            token = int(self._full.candidates_data.logit.argmax())
        lc.llama_sampler_accept(self._grammar, token)
        return token

    def close(self) -> None:
        if self._grammar:
            self._lc.llama_sampler_free(self._grammar)
            self._grammar = None
