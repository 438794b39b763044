"""Strict checks for Serve config documents (``serve deploy`` YAML, KubeRay serveConfigV2).

``ServeDeploySchema`` alone accepts unknown deployment keys (a misspelt
``max_ongoing_requestz`` is silently ignored) and does not validate ``autoscaling_config``
(min above max passes). Both are checked here.
"""

from __future__ import annotations

from typing import Any

from ray.serve.config import AutoscalingConfig
from ray.serve.schema import DeploymentSchema, RayActorOptionsSchema, ServeDeploySchema

_LLM_APP = "actors.serve.llm_app:build_app"  # the Serve app whose args are an LlmAppArgs


class ServeConfigError(ValueError):
    """A Serve config that would deploy something other than what it says."""


def _unknown(given: dict[str, Any], known: dict[str, Any], where: str) -> None:
    extra = sorted(set(given) - set(known))
    if extra:
        raise ServeConfigError(f"{where}: unknown keys {extra}")


def validate_serve_config(data: dict[str, Any]) -> ServeDeploySchema:
    """Validate a Serve config mapping; raises :class:`ServeConfigError` with the place."""
    try:
        schema = ServeDeploySchema.model_validate(data)
    except ValueError as exc:
        raise ServeConfigError(str(exc)) from exc
    for app in data.get("applications", []):
        if app.get("import_path") == _LLM_APP:
            # the app's own args: a typo or an engine the replica cannot build surfaced
            # only at deploy, in the replica's log
            from sapphire.llm.app_args import parse_llm_args

            try:
                parse_llm_args(app.get("args"))
            except ValueError as exc:
                raise ServeConfigError(f"{app.get('name')}.args: {exc}") from exc
        for dep in app.get("deployments", []):
            where = f"{app.get('name')}/{dep.get('name')}"
            _unknown(dep, DeploymentSchema.model_fields, where)
            _unknown(
                dep.get("ray_actor_options") or {},
                RayActorOptionsSchema.model_fields,
                f"{where}.ray_actor_options",
            )
            if dep.get("autoscaling_config") is not None:
                try:
                    AutoscalingConfig(**dep["autoscaling_config"])
                except (TypeError, ValueError) as exc:
                    raise ServeConfigError(f"{where}.autoscaling_config: {exc}") from exc
    return schema
