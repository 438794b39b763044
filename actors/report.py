"""The run summary table printed at the end of the main job (``sapphire.cli.summary``)."""

from __future__ import annotations

from rich.console import Console

from actors.llm_bridge import print_llm_summary
from actors.system import RunResult
from sapphire.cli import summary


def print_summary(result: RunResult, console: Console | None = None) -> None:
    summary.print_summary(
        result.run_id,
        result.summary,
        result.steps,
        result.wall_s,
        result.store or result.storage_root / "store",
        console,
    )
    print_llm_summary(result.summary.get("llm", {}), console)
