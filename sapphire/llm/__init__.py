"""LLM decisions: the decision schema and its gate, prompts from numbers, engines, clients.

Nothing here imports a model backend at import time: llama.cpp (extra ``llm-cpu``), vLLM and
transformers (extra ``llm-gpu``) load when an engine is created.
"""

from sapphire.llm.client import DecisionClient, EngineDecisionClient
from sapphire.llm.decision import (
    HOLD,
    DecisionStats,
    LlmDecision,
    ParseResult,
    decision_json_schema,
    parse_decision,
)
from sapphire.llm.engines import (
    EngineConfig,
    EngineError,
    Generation,
    LlamaCppConfig,
    TextEngine,
    TransformersConfig,
    VllmConfig,
    create_engine,
    engine_config_from_dict,
)
from sapphire.llm.prompt import (
    DecisionPrompt,
    MarketFeatures,
    SamplingConfig,
    build_prompt,
    cache_key,
)

__all__ = [
    "HOLD",
    "DecisionClient",
    "DecisionPrompt",
    "DecisionStats",
    "EngineConfig",
    "EngineDecisionClient",
    "EngineError",
    "Generation",
    "LlamaCppConfig",
    "LlmDecision",
    "MarketFeatures",
    "ParseResult",
    "SamplingConfig",
    "TextEngine",
    "TransformersConfig",
    "VllmConfig",
    "build_prompt",
    "cache_key",
    "create_engine",
    "decision_json_schema",
    "engine_config_from_dict",
    "parse_decision",
]
