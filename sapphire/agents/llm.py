"""Registry entry point for agent kind ``llm`` (the agent lives in ``llm_agent``)."""

from sapphire.agents.llm_agent import (
    DecisionRequest,
    LlmAgent,
    LlmAgentConfig,
    build_llm_agent,
)

__all__ = ["DecisionRequest", "LlmAgent", "LlmAgentConfig", "build_llm_agent"]
