"""``sapphire backtest`` on a system config: the kernel in this process, rows in the store."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sapphire.adapters.kill_switch import system_kill_switch
from sapphire.adapters.stores import backend_builder, next_query, store_location
from sapphire.cli.summary import print_summary
from sapphire.config.system import ConfigError, check_run_id, load_config
from sapphire.kernel.assembly import WiringError, storage_root
from sapphire.kernel.coordinator import CoordinatorStep
from sapphire.kernel.runner import InProcessKernel, NoEventsError
from sapphire.kernel.timing import WindowError
from sapphire.storage.sink import StorageSink


def default_run_id() -> str:
    return time.strftime("backtest-%Y%m%d-%H%M%S", time.gmtime())


def run_in_process(config_path: Path, run_id: str | None, progress: bool, console: Console) -> int:
    try:
        config = load_config(config_path)
        run_id = check_run_id(run_id or config.run_id or default_run_id())
        storage_root(config)
        firm = system_kill_switch(config)
        kernel = InProcessKernel(config, run_id, kill_switch=firm.halt_reason)
    except (ConfigError, WiringError, WindowError) as exc:
        message = str(exc)  # every line names the config file it came from
        if str(config_path) not in message:
            message = f"{config_path}: {message}"
        console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
        return 2
    # A backtest is a batch job: what matters is that every row is durable when it ends, so
    # it commits in large groups (storage.batch_rows is the streaming system's latency knob).
    try:
        backend = backend_builder(config.storage, run_id)()
        sink = StorageSink(backend, batch_size=max(config.storage.batch_rows, 200_000))
    except Exception as exc:  # the store refused to start (settings, schema, credentials, I/O)
        console.print(f"[red]error:[/red] {escape(f'{config_path}: storage: {exc}')}")
        return 2
    store = store_location(config)
    columns = (
        TextColumn("[bold]backtest"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} events · {task.fields[fills]} fills"),
        TimeElapsedColumn(),
    )
    started = time.perf_counter()
    with Progress(*columns, console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task("backtest", total=config.data.max_events, fills=0)

        def on_step(step: CoordinatorStep) -> None:
            bar.update(task, advance=step.events, fills=step.fills_total)

        try:
            unacked = kernel.run_stored(sink, on_step)
        except NoEventsError as exc:
            console.print(f"[red]error:[/red] {exc}")
            return 2
    wall_s = time.perf_counter() - started
    summary = kernel.summary()
    print_summary(run_id, summary, kernel.steps, wall_s, store, console)
    if unacked:
        console.print(f"[red]error:[/red] {unacked} rows were not stored: {sink.stats.last_error}")
        return 1
    console.print(f"next: {next_query(run_id, config_path, config)}")
    return 0
