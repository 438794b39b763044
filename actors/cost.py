"""What a run cost: measured resource use of every actor, priced from ``ops/prices.yaml``.

Two figures per actor, both in the price table's currency (Decimal):
- **used**: CPU seconds the actor's worker process really burnt (``time.process_time()`` read
  inside the actor through Ray's ``__ray_call__``, so no actor needs a method for it), plus
  its GPU seconds (GPUs assigned x wall time: a GPU is billed while held, busy or not);
- **reserved**: the CPUs and GPUs Ray assigned to it x the run's wall time, which is what a
  cluster sized for this run pays for.
The driver (this process) is counted too. Call ``measure_system`` before the actors are
killed; ``print_cost`` renders the table under the run summary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import ray

log = logging.getLogger(__name__)

HOUR = Decimal(3600)
PRECISION = Decimal("0.000001")  # fractions of a cent add up over many runs


class CostError(ValueError):
    """A price table that cannot be used."""


class Prices(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cpu_hour: Decimal
    gpu_hour: Decimal = Decimal(0)
    description: str = ""


class PriceTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    currency: str
    profiles: dict[str, Prices]


class ResourceUse(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    cpu_s: float  # measured process CPU time
    wall_s: float
    cpus: float = 0.0  # assigned by Ray
    gpus: float = 0.0

    @property
    def gpu_s(self) -> float:
        return self.gpus * self.wall_s


class CostLine(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    cpu_s: float
    gpu_s: float
    used: Decimal
    reserved: Decimal


class CostReport(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    profile: str
    wall_s: float
    lines: tuple[CostLine, ...]

    @property
    def used(self) -> Decimal:
        return sum((line.used for line in self.lines), Decimal(0))

    @property
    def reserved(self) -> Decimal:
        return sum((line.reserved for line in self.lines), Decimal(0))

    @property
    def cpu_s(self) -> float:
        return sum(line.cpu_s for line in self.lines)

    @property
    def gpu_s(self) -> float:
        return sum(line.gpu_s for line in self.lines)


def load_prices(path: str | Path, profile: str) -> tuple[str, Prices]:
    """(currency, prices of ``profile``) from a price table file."""
    path = Path(path)
    try:
        table = msgspec.yaml.decode(path.read_bytes(), type=PriceTable)
    except OSError as exc:
        raise CostError(f"cannot read price table {path}: {exc.strerror}") from None
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise CostError(f"{path}: {exc}") from None
    if profile not in table.profiles:
        raise CostError(f"{path}: no price profile {profile!r}; have {sorted(table.profiles)}")
    prices = table.profiles[profile]
    if prices.cpu_hour < 0 or prices.gpu_hour < 0:
        raise CostError(f"{path}: prices of {profile!r} must not be negative")
    return table.currency, prices


def estimate(
    uses: list[ResourceUse], prices: Prices, *, currency: str, profile: str, wall_s: float
) -> CostReport:
    lines = []
    for use in uses:
        gpu_cost = Decimal(repr(use.gpu_s)) / HOUR * prices.gpu_hour
        used = Decimal(repr(use.cpu_s)) / HOUR * prices.cpu_hour + gpu_cost
        reserved = Decimal(repr(use.cpus * use.wall_s)) / HOUR * prices.cpu_hour + gpu_cost
        lines.append(
            CostLine(
                name=use.name,
                cpu_s=use.cpu_s,
                gpu_s=use.gpu_s,
                used=used.quantize(PRECISION),
                reserved=reserved.quantize(PRECISION),
            )
        )
    return CostReport(currency=currency, profile=profile, wall_s=wall_s, lines=tuple(lines))


# -- measuring --------------------------------------------------------------------------------
def _probe(_actor: Any) -> tuple[float, dict[str, float]]:
    """Runs inside the actor's process."""
    # get_assigned_resources is unannotated in Ray 2.60
    assigned = ray.get_runtime_context().get_assigned_resources()  # type: ignore[no-untyped-call]
    return time.process_time(), {k: float(v) for k, v in assigned.items()}


def measure_actors(
    actors: Mapping[str, Any], wall_s: float, timeout_s: float = 30.0
) -> list[ResourceUse]:
    """Resource use of each live actor; one that does not answer is left out (and named in
    the log), so a dead actor cannot fail the run's report."""
    names = sorted(actors)
    refs = [actors[name].__ray_call__.remote(_probe) for name in names]
    uses = []
    for name, ref in zip(names, refs, strict=True):
        try:
            cpu_s, assigned = ray.get(ref, timeout=timeout_s)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            log.warning("cost: %s not measured: %s", name, exc)
            continue
        uses.append(
            ResourceUse(
                name=name,
                cpu_s=cpu_s,
                wall_s=wall_s,
                cpus=assigned.get("CPU", 0.0),
                gpus=assigned.get("GPU", 0.0),
            )
        )
    return uses


def measure_driver(wall_s: float) -> ResourceUse:
    # the driver holds no Ray resources; one CPU is what running it takes
    return ResourceUse(name="driver", cpu_s=time.process_time(), wall_s=wall_s, cpus=1.0)


def system_actors(handles: Any) -> dict[str, Any]:
    """The actors of ``actors.system.SystemHandles`` by role."""
    actors = {
        "coordinator": handles.coordinator,
        "market_data": handles.market_data,
        "execution": handles.execution,
        "storage_sink": handles.sink,
    }
    # the venues of shards after the first (``execution`` is shard 0's)
    actors.update({f"execution_{k}": v for k, v in enumerate(handles.venues[1:], start=1)})
    # the market data of shards after the first, where the replay is read shard by shard
    actors.update({f"market_data_{k}": r for k, r in enumerate(handles.readers[1:], start=1)})
    actors.update({actor_key(leaf): h for leaf, h in handles.agent_hosts.items()})
    actors.update(serve_replicas())
    return actors


def actor_key(leaf: str) -> str:
    """An agent actor's line in the cost table: ``agent:<id>``, or ``agents:<host>`` for
    agents sharing a host."""
    kind, _, name = leaf.partition("-")
    return f"{kind}:{name}"


def serve_replicas(app_prefix: str = "sapphire-llm") -> dict[str, Any]:
    """The live Serve replicas of the LLM app(s) (``llm:<replica>``): the model's CPU/GPU time
    belongs to the run that asked it. Empty when no such app runs."""
    out: dict[str, Any] = {}
    try:
        named = ray.util.list_named_actors(all_namespaces=True)
    except Exception as exc:  # never fail a run's report over its cost lines
        log.warning("cost: Serve replicas not listed: %s", exc)
        return out
    for entry in named:
        name = str(entry.get("name", ""))
        # Ray Serve names replica actors SERVE_REPLICA::<app>#<deployment>#<id>
        if not name.startswith(f"SERVE_REPLICA::{app_prefix}"):
            continue
        try:
            out[f"llm:{name.rsplit('#', 1)[-1]}"] = ray.get_actor(
                name, namespace=entry["namespace"]
            )
        except ValueError:  # gone between listing and lookup
            continue
    return out


def measure_system(
    handles: Any,
    wall_s: float,
    prices_file: str | Path = "ops/prices.yaml",
    profile: str = "on_prem",
    skip: Iterable[str] = (),
) -> CostReport:
    """The run's cost report: call after ``finish`` and before ``shutdown_system``. Actors
    named in ``skip`` (quarantined agents: hung, a probe would wait out its timeout) are left
    out."""
    currency, prices = load_prices(_resolve(prices_file), profile)
    actors = {k: v for k, v in system_actors(handles).items() if k not in set(skip)}
    uses = [*measure_actors(actors, wall_s), measure_driver(wall_s)]
    return estimate(uses, prices, currency=currency, profile=profile, wall_s=wall_s)


def resolve_prices_file(path: str | Path) -> Path:
    return _resolve(path)


def _resolve(path: str | Path) -> Path:
    """A relative price file is looked up from the working directory, then the repo root
    (a job's working directory is not always the checkout)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    beside = Path(__file__).resolve().parents[1] / path
    return beside if beside.exists() else path


def print_cost(report: CostReport, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"Cost estimate ({report.profile} prices, {report.currency})")
    for col in ("actor", "CPU s", "GPU s", "used", "reserved"):
        table.add_column(col, justify="right")
    for line in report.lines:
        table.add_row(
            line.name, f"{line.cpu_s:.2f}", f"{line.gpu_s:.1f}", str(line.used), str(line.reserved)
        )
    table.add_row(
        "total",
        f"{report.cpu_s:.2f}",
        f"{report.gpu_s:.1f}",
        str(report.used),
        str(report.reserved),
        style="bold",
    )
    console.print(table)
