"""The real 4-bit model (SmolLM2-135M Q4_1) in llama.cpp: batched, grammar-constrained."""

from __future__ import annotations

import pytest

from sapphire.llm.decision import parse_decision
from sapphire.llm.engines import LlamaCppConfig
from sapphire.llm.prompt import MarketFeatures, SamplingConfig, build_prompt

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow


def _prompts(n: int) -> list:  # type: ignore[type-arg]
    return [
        build_prompt(
            MarketFeatures(
                symbol="BTCUSDT",
                ts_event_ns=i,
                mid=61600.0 + 3.5 * i,
                spread_bps=0.2 + 0.1 * i,
                returns_bps=((10, 2.0 * i - 5.0), (60, 4.0 - i)),
                volatility_bps=1.5,
                imbalance=(i - 2) / 4,
                position_lots=i - 1,
                max_position_lots=5,
            )
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    from sapphire.llm.llamacpp import LlamaCppEngine

    return LlamaCppEngine(
        LlamaCppConfig(n_threads=1, max_parallel=4, sampling=SamplingConfig(max_tokens=48))
    )


def test_batched_generation_gives_schema_valid_json(engine) -> None:  # type: ignore[no-untyped-def]
    before = engine.timings.tokens
    gens = engine.generate_batch_detailed(_prompts(4))
    assert len(gens) == 4
    # the decode loop accounts for every token after each row's first (sampled at prefill)
    decoded = sum(g.completion_tokens for g in gens) - len(gens)
    assert engine.timings.tokens - before >= decoded > 0
    assert engine.timings.decode_s > 0 and engine.timings.sample_s > 0
    results = [parse_decision(g.text) for g in gens]
    # the grammar allows only the schema; only a max_tokens cut could break it
    assert sum(r.ok for r in results) >= 3, [g.text for g in gens]
    assert all(g.completion_tokens > 0 and g.prompt_tokens > 50 for g in gens)


def test_greedy_generation_is_repeatable_across_prefix_cache_reuse(engine) -> None:  # type: ignore[no-untyped-def]
    prompts = _prompts(3)
    first = engine.generate_batch([prompts[2]])
    engine.generate_batch(prompts[:2])  # moves the cached prefix elsewhere
    assert engine.generate_batch([prompts[2]]) == first


def test_more_prompts_than_max_parallel_are_split(engine) -> None:  # type: ignore[no-untyped-def]
    texts = engine.generate_batch(_prompts(5))
    assert len(texts) == 5 and all(texts)


def test_engine_decision_client_returns_a_validated_decision(engine) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from sapphire.llm.client import DecisionClient, EngineDecisionClient

    client = EngineDecisionClient(engine)
    assert isinstance(client, DecisionClient)
    decision = asyncio.run(client.decide(_prompts(1)[0]))
    assert decision.action in ("buy", "sell", "hold")
    assert client.stats.ok + client.stats.malformed_json + client.stats.schema_violation == 1


def test_requantized_q4_0_copy_is_made_once_and_answers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sapphire.llm.llamacpp import LlamaCppEngine

    cfg = LlamaCppConfig(
        n_threads=1,
        max_parallel=2,
        requantize="q4_0",
        flash_attn=True,
        cache_dir=str(tmp_path),
        sampling=SamplingConfig(max_tokens=48),
    )
    first = LlamaCppEngine(cfg)
    (made,) = tmp_path.glob("*.q4_0.gguf")
    stamp = made.stat().st_mtime_ns
    assert first.model_id.endswith("+q4_0")
    assert first.weights_bytes < first.n_params * 2 / 2.5  # 4-bit, not 16-bit
    texts = first.generate_batch(_prompts(2))
    assert sum(parse_decision(t).ok for t in texts) >= 1
    LlamaCppEngine(cfg)
    assert made.stat().st_mtime_ns == stamp  # reused, not rewritten


def test_model_params_override_applies_inside_and_is_restored() -> None:
    import llama_cpp

    from sapphire.llm.llamacpp import _llama_model_params

    original = llama_cpp.llama_cpp.llama_model_default_params
    default = original().use_extra_bufts
    with _llama_model_params(use_extra_bufts=not default, not_a_field=1):
        assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is (not default)
    assert llama_cpp.llama_cpp.llama_model_default_params is original


def test_sequential_reference_path_prefills_multi_token_prompts() -> None:
    # Prompt prefill is a multi-token llama_decode: on AMX-INT8 CPUs this crashed (SIGSEGV in
    # ggml's AMX matmul) unless the weights stay out of the AMX buffer type.
    from sapphire.llm.llamacpp import LlamaCppEngine, cpu_backend_uses_amx

    eng = LlamaCppEngine(
        LlamaCppConfig(n_threads=1, parallel=False, sampling=SamplingConfig(max_tokens=48))
    )
    assert eng.amx_disabled is cpu_backend_uses_amx(eng._lc)
    (gen,) = eng.generate_batch_detailed(_prompts(1))
    assert gen.prompt_tokens > 50 and gen.completion_tokens > 0
    assert parse_decision(gen.text).ok, gen.text


def test_top_candidates_pick_what_the_full_grammar_mask_picks(engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sapphire.llm import grammar_sampler

    prompts = _prompts(4)
    engine.generate_batch(prompts)  # the same cached prefix before each of the two runs
    checks = []
    real = grammar_sampler.GreedyGrammarSampler._best_of_top

    def counted(self, logits):  # type: ignore[no-untyped-def]
        found = real(self, logits)
        checks.append(found)
        return found

    monkeypatch.setattr(grammar_sampler.GreedyGrammarSampler, "_best_of_top", counted)
    with_top = engine.generate_batch(prompts)
    assert any(found is not None for found in checks)  # the shortcut did decide tokens
    monkeypatch.setattr(grammar_sampler.GreedyGrammarSampler, "_best_of_top", lambda s, lg: None)
    assert engine.generate_batch(prompts) == with_top
