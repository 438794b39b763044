"""The ``llm:`` section of a system config (the Ray Serve LLM app's args), checked when the
config loads: a typo (``max_batch_sise``) is refused there, not after Ray started, nor
ignored in a run without an LLM agent."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from sapphire.llm.engines import EngineConfig, engine_config_from_dict
from sapphire.llm.pit import PointInTimeMode


class LlmAppArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``llm:`` section of a system config, and the ``args`` of a Serve YAML."""

    engine: dict[str, Any] = msgspec.field(default_factory=dict)
    max_batch_size: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    batch_wait_timeout_s: Annotated[float, msgspec.Meta(ge=0.0)] = 0.02
    point_in_time: PointInTimeMode = "warn"
    """warn: decisions about events before the model's knowledge cutoff are flagged (run
    summary, stored rows); strict: they are refused (the agent's fallback decides); off."""
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0.0)] = 10.0
    """How long (wall clock) an agent waits for one decision: then it is stored as a timeout
    with its reason and the agent's fallback decides (``sapphire run``'s agents; a Serve YAML
    deployed alone does not use it). A small replica on a loaded host needs more."""
    ray_actor_options: dict[str, Any] | None = None
    autoscaling_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        engine_config_from_dict(dict(self.engine))  # its kind and fields, when loaded


def parse_llm_args(
    args: LlmAppArgs | dict[str, Any] | None,
) -> tuple[LlmAppArgs, EngineConfig]:
    """The app's args and its engine's config; ValueError ``llm: ...`` names what is wrong."""
    try:
        parsed = (
            args if isinstance(args, LlmAppArgs) else msgspec.convert(dict(args or {}), LlmAppArgs)
        )
        return parsed, engine_config_from_dict(dict(parsed.engine))
    except (msgspec.ValidationError, ValueError) as exc:
        raise ValueError(f"llm: {exc}") from None
