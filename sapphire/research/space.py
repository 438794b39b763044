"""Search spaces in config files, parsed into plain typed specs (no Ray here).

A space is a mapping from a parameter path to a distribution::

    risk_factor: {type: loguniform, low: 0.01, high: 1.0}
    order_refresh_time: {type: uniform, low: 0.2, high: 2.0}
    strategy_params.fast: {type: int, low: 5, high: 30}
    execution_timeframe: {type: choice, values: [infinite, finite]}

Dotted paths address nested agent params (``strategy_params.fast``). ``actors.tune`` turns
each spec into the matching ``ray.tune`` sampler.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import msgspec

Kind = Literal["uniform", "loguniform", "int", "logint", "choice"]


class SpaceError(ValueError):
    """A search-space entry that cannot be sampled; the message names the parameter."""


class ParamSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: Kind
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None
    step: float | None = None


def parse_space(raw: dict[str, Any]) -> dict[str, ParamSpec]:
    """Validate every entry; raises :class:`SpaceError` naming the first bad one."""
    if not isinstance(raw, dict) or not raw:
        raise SpaceError("search space must be a non-empty mapping of parameter -> spec")
    out: dict[str, ParamSpec] = {}
    for name, entry in raw.items():
        try:
            spec = msgspec.convert(entry, ParamSpec, strict=False)
        except msgspec.ValidationError as exc:
            raise SpaceError(f"space.{name}: {exc}") from None
        _check(name, spec)
        out[str(name)] = spec
    return out


def _check(name: str, spec: ParamSpec) -> None:
    if spec.type == "choice":
        if not spec.values:
            raise SpaceError(f"space.{name}: choice needs a non-empty 'values' list")
        return
    if spec.low is None or spec.high is None:
        raise SpaceError(f"space.{name}: {spec.type} needs 'low' and 'high'")
    if not (math.isfinite(spec.low) and math.isfinite(spec.high)) or spec.low >= spec.high:
        raise SpaceError(f"space.{name}: need finite low < high, got {spec.low}, {spec.high}")
    if spec.type in ("loguniform", "logint") and spec.low <= 0:
        raise SpaceError(f"space.{name}: {spec.type} needs low > 0, got {spec.low}")
    if spec.type == "logint" and spec.step is not None:
        # Ray's log-integer sampler takes no step and Optuna refuses a step on a log scale:
        # the values came out off the step's grid
        raise SpaceError(f"space.{name}: logint takes no step (use int with a step)")
    if spec.step is not None and spec.step <= 0:
        raise SpaceError(f"space.{name}: step must be > 0, got {spec.step}")
    bounds = {"low": spec.low, "high": spec.high, "step": spec.step}
    if spec.type in ("int", "logint"):
        # int(3.2)..int(3.8) sampled 3, outside the range asked for
        fractional = [k for k, v in bounds.items() if v is not None and v != int(v)]
        if fractional:
            raise SpaceError(f"space.{name}: {spec.type} needs whole numbers; {fractional} are not")
    if spec.step is not None:
        # the searchers' grid is the step's multiples (Ray's q*): Optuna counted low + k*step
        # and the random search the multiples, two grids for one space
        off = [k for k in ("low", "high") if not _multiple(bounds[k], spec.step)]
        if off:
            raise SpaceError(
                f"space.{name}: {' and '.join(off)} must be multiples of step {spec.step:g} "
                f"(the values are the step's multiples from low to high), got {spec.low:g}, "
                f"{spec.high:g}"
            )


def _multiple(value: float | None, step: float) -> bool:
    ratio = (value or 0.0) / step
    return abs(ratio - round(ratio)) <= 1e-9 * max(1.0, abs(ratio))


def apply_params(base: dict[str, Any], sampled: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each sampled value set at its dotted path (``base`` is not modified)."""
    out = copy.deepcopy(base)
    for path, value in sampled.items():
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpaceError(f"parameter path {path!r}: {part!r} is not a mapping")
            node = child
        node[leaf] = value.item() if hasattr(value, "item") else value  # numpy scalars -> Python
    return out


def grid_values(spec: ParamSpec, points: int) -> list[Any]:
    """``points`` evenly spaced values (log-spaced for log kinds): for small grid sweeps."""
    if spec.type == "choice":
        return list(spec.values or [])
    assert spec.low is not None and spec.high is not None
    n = max(points, 1)
    if spec.type in ("loguniform", "logint"):
        lo, hi = math.log(spec.low), math.log(spec.high)
        raw = [math.exp(lo + (hi - lo) * i / max(n - 1, 1)) for i in range(n)]
    else:
        raw = [spec.low + (spec.high - spec.low) * i / max(n - 1, 1) for i in range(n)]
    if spec.type in ("int", "logint"):
        return sorted({round(v) for v in raw})
    return raw
