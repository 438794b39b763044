"""Per-run cost: the price table, the arithmetic (Decimal), and measuring real Ray actors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import cost
from tests.ray_local import init_local, release_local

REPO = Path(__file__).resolve().parents[2]
PRICES = REPO / "ops" / "prices.yaml"


def test_shipped_price_table_loads_every_profile() -> None:
    for profile in ("on_prem", "aws", "aws_spot", "gcp"):
        currency, prices = cost.load_prices(PRICES, profile)
        assert currency == "USD" and prices.cpu_hour > 0 and prices.gpu_hour > prices.cpu_hour


def test_bad_price_tables_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(cost.CostError, match="no price profile 'azure'"):
        cost.load_prices(PRICES, "azure")
    bad = tmp_path / "p.yaml"
    bad.write_text("currency: USD\nprofiles: {x: {cpu_hour: '1', gpu_hours: '2'}}\n")
    with pytest.raises(cost.CostError, match="gpu_hours"):
        cost.load_prices(bad, "x")
    bad.write_text("currency: USD\nprofiles: {x: {cpu_hour: '-1'}}\n")
    with pytest.raises(cost.CostError, match="negative"):
        cost.load_prices(bad, "x")
    with pytest.raises(cost.CostError, match="cannot read"):
        cost.load_prices(tmp_path / "none.yaml", "x")


def test_estimate_prices_used_and_reserved_time() -> None:
    prices = cost.Prices(cpu_hour=Decimal("0.0150"), gpu_hour=Decimal("0.40"))
    uses = [
        cost.ResourceUse(name="agent", cpu_s=3600.0, wall_s=7200.0, cpus=0.25),
        cost.ResourceUse(name="llm", cpu_s=0.0, wall_s=1800.0, cpus=1.0, gpus=1.0),
    ]
    report = cost.estimate(uses, prices, currency="USD", profile="p", wall_s=7200.0)
    agent, llm = report.lines
    assert agent.used == Decimal("0.015") and agent.reserved == Decimal("0.0075")
    assert llm.gpu_s == 1800.0 and llm.used == Decimal("0.2")
    assert llm.reserved == Decimal("0.2075")
    assert report.used == Decimal("0.215") and isinstance(report.used, Decimal)


@given(st.floats(0, 1e7), st.floats(0, 1e7), st.floats(0, 64))
def test_cost_is_non_negative_and_grows_with_cpu_time(
    cpu_s: float, extra: float, cpus: float
) -> None:
    prices = cost.Prices(cpu_hour=Decimal("0.05"))
    a = cost.estimate(
        [cost.ResourceUse(name="a", cpu_s=cpu_s, wall_s=10.0, cpus=cpus)],
        prices, currency="USD", profile="p", wall_s=10.0,
    )  # fmt: skip
    b = cost.estimate(
        [cost.ResourceUse(name="a", cpu_s=cpu_s + extra, wall_s=10.0, cpus=cpus)],
        prices, currency="USD", profile="p", wall_s=10.0,
    )  # fmt: skip
    assert Decimal(0) <= a.used <= b.used and a.reserved == b.reserved >= 0


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:

    init_local(num_cpus=2, include_dashboard=False, namespace="cost-test")
    yield
    release_local()


@pytest.mark.slow
def test_measuring_real_actors(local_ray: None) -> None:
    import ray

    @ray.remote
    class Burner:
        def burn(self, seconds: float) -> int:
            end, n = time.process_time() + seconds, 0
            while time.process_time() < end:
                n += 1
            return n

    busy = Burner.options(num_cpus=0.5).remote()
    idle = Burner.options(num_cpus=0.25).remote()
    dead = Burner.options(num_cpus=0).remote()
    ray.get([busy.burn.remote(1.5), idle.burn.remote(0.0), dead.burn.remote(0.0)])
    ray.kill(dead)
    uses = {u.name: u for u in cost.measure_actors({"busy": busy, "idle": idle, "dead": dead}, 5.0)}
    assert set(uses) == {"busy", "idle"}  # a dead actor is left out, not an error
    # both paid their process's start-up (imports: 1.1 s of CPU on a loaded CI host, where
    # an idle actor's 0.6 s margin failed); the busy one burned 1.5 s on top of it
    assert uses["busy"].cpu_s >= 1.5
    assert uses["busy"].cpu_s - uses["idle"].cpu_s > 0.75
    assert uses["busy"].cpus == 0.5 and uses["idle"].cpus == 0.25 and uses["busy"].gpus == 0
    _, prices = cost.load_prices(PRICES, "aws")
    report = cost.estimate(list(uses.values()), prices, currency="USD", profile="aws", wall_s=5.0)
    assert report.lines[0].used > 0 and report.reserved > 0
    import io

    from rich.console import Console

    out = io.StringIO()
    cost.print_cost(report, Console(file=out, width=120))
    assert "busy" in out.getvalue() and "total" in out.getvalue()


def test_a_mistyped_price_profile_is_refused_before_the_run(tmp_path: Path) -> None:
    """Read at the run's end, a bad profile ended a finished run with no summary: now
    `sapphire run` refuses it before Ray starts (exit 2, one line, nothing claimed)."""
    import msgspec

    from sapphire.cli import main
    from tests.cli.demo_runs import demo

    config = demo(tmp_path)
    raw = msgspec.yaml.decode(config.read_bytes())
    raw["cost"] = {"profile": "awz"}
    config.write_bytes(msgspec.yaml.encode(raw))
    started = time.monotonic()
    assert main(["run", "--config", str(config), "--run-id", "typo", "--no-progress"]) == 2
    assert time.monotonic() - started < 20  # no Ray started
    assert not (tmp_path / "runs" / "typo" / "claimed").exists()
