"""Decision prompts the LLM engine tests share: varied features, one symbol."""

from __future__ import annotations

from sapphire.llm.prompt import DecisionPrompt, MarketFeatures, build_prompt


def sample_prompts(n: int) -> list[DecisionPrompt]:
    """``n`` prompts whose features differ in every field an answer could depend on."""
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
