"""``sapphire backtest`` on a system config: the kernel in this process, rows in the store."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from sapphire.adapters.kill_switch import run_kill_switch, system_kill_switch
from sapphire.adapters.stores import backend_builder, store_location
from sapphire.cli import one_line
from sapphire.cli.progress import bar_columns, estimate_events, startup_line
from sapphire.cli.query_cmd import write_instruments
from sapphire.cli.summary import damaged_input, print_next, print_summary
from sapphire.config.secrets import SecretError
from sapphire.config.system import ConfigError, SystemConfig, check_run_id, load_config
from sapphire.data.validation import DataFileError, damaged_files
from sapphire.kernel.assembly import claim_run, data_files, run_folder, storage_root
from sapphire.kernel.builders import WiringError
from sapphire.kernel.coordinator import CoordinatorStep
from sapphire.kernel.runner import InProcessKernel, NoEventsError
from sapphire.kernel.timing import WindowError
from sapphire.storage.sink import StorageSink


def default_run_id() -> str:
    # the pid too: two backtests started in one second must not share an id
    return time.strftime("backtest-%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"


def run_in_process(config_path: Path, run_id: str | None, progress: bool, console: Console) -> int:
    try:
        config = load_config(config_path)
        run_id = check_run_id(run_id or config.run_id or default_run_id())
        storage_root(config)
        firm = system_kill_switch(config)
        run_switch = run_kill_switch(config, run_id)  # `sapphire stop RUN_ID`

        def halt_reason() -> str:
            return firm.halt_reason() or run_switch.halt_reason()

        kernel = InProcessKernel(config, run_id, kill_switch=halt_reason)
    except (ConfigError, SecretError, WiringError, WindowError, DataFileError) as exc:
        # DataFileError: with data.cache off the kernel reads each file's header as it is
        # built, so an unreadable file (an empty gzip, a non-gzip .gz) fails here, not in
        # the replay
        message = str(exc)  # every line names the config file it came from
        if str(config_path) not in message:
            message = f"{config_path}: {message}"
        console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
        return 2
    try:  # before the store is opened: its recovery must not touch a live run's files
        claim = claim_run(config, run_id)
    except WiringError as exc:
        console.print(f"[red]error:[/red] {escape(f'{config_path}: {exc}')}", soft_wrap=True)
        return 2
    try:
        return _run_claimed(config_path, config, run_id, kernel, progress, console)
    finally:
        claim.unlink(missing_ok=True)


def _run_claimed(
    config_path: Path,
    config: SystemConfig,
    run_id: str,
    kernel: InProcessKernel,
    progress: bool,
    console: Console,
) -> int:
    # A backtest is a batch job: what matters is that every row is durable when it ends, so
    # it commits in large groups (storage.batch_rows is the streaming system's latency knob).
    try:
        backend = backend_builder(config.storage, run_id)()
        sink = StorageSink(backend, batch_size=max(config.storage.batch_rows, 200_000))
    except Exception as exc:  # the store refused to start (settings, schema, credentials, I/O)
        why = f"{config_path}: storage: {one_line(exc)}"
        console.print(f"[red]error:[/red] {escape(why)}", soft_wrap=True)
        return 2
    stored = {t: marks for t, marks in sink.committed().items() if marks}
    if stored:
        # rows of this run id are in the store already: the same seqs would be taken for
        # duplicates and dropped, and the store would mix two runs under one id
        console.print(
            f"[red]error:[/red] {escape(f'{config_path}: run {run_id!r} is already stored')} "
            f"({', '.join(sorted(stored))} in {escape(store_location(config))}): choose "
            "another --run-id",
            soft_wrap=True,
        )
        return 2
    store = store_location(config)
    try:
        folder = run_folder(config, run_id)  # before the first step: `sapphire stop` finds it
    except WiringError as exc:
        console.print(f"[red]error:[/red] {escape(f'{config_path}: {exc}')}", soft_wrap=True)
        return 2
    if config.storage.backend == "parquet":  # prices and sizes for `sapphire query`
        try:
            # with the firm's currency the caps were read in: the report reads the capital
            # in it, whatever the config's instruments are by then
            currency = kernel.coordinator.core.portfolio.reporting_asset
            write_instruments(folder, kernel.instruments, currency, config)
        except OSError as exc:  # the run can still be stored; query then shows ticks
            console.print(f"warning: instruments not recorded for query: {escape(str(exc))}")
    files = data_files(config.data)
    total = estimate_events(files, config.data.max_events) if progress else None
    console.print(
        escape(startup_line("backtest", run_id, config, store, files, total, kernel.instruments)),
        highlight=False,
        soft_wrap=True,
    )
    started = time.perf_counter()
    columns = bar_columns("backtest", total)
    with Progress(*columns, console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task("backtest", total=total, fills=0)

        shown = [time.perf_counter(), 0.0]  # the bar's last redraw (wall s), events since

        def on_step(step: CoordinatorStep) -> None:
            # the bar is for people: updated ten times a second, not once a window (rich's
            # update per window was 3 % of a replay of 10 ms windows)
            shown[1] += step.events
            now = time.perf_counter()
            if now - shown[0] >= 0.1 or step.done:
                bar.update(task, advance=shown[1], fills=step.fills_total)
                shown[0], shown[1] = now, 0

        try:
            unacked = kernel.run_stored(sink, on_step)
        except NoEventsError as exc:
            console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            return 2
        except DataFileError as exc:  # a data file no row can be read from (it names itself)
            console.print(f"[red]error:[/red] {escape(f'{config_path}: {exc}')}", soft_wrap=True)
            return 2
        except OSError as exc:  # the store's own failure at the end (see StorageSink.finish)
            console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            return 1
    wall_s = time.perf_counter() - started
    summary = kernel.summary()
    print_summary(run_id, summary, kernel.steps, wall_s, store, console)
    if unacked:
        console.print(
            f"[red]error:[/red] {unacked} rows were not stored: {sink.stats.last_error}",
            soft_wrap=True,
        )
        return 1
    damaged = damaged_files(summary.get("input_rejected", {}))
    if damaged:
        console.print(f"[red]error:[/red] {escape(damaged_input(run_id, damaged))}", soft_wrap=True)
        return 3
    print_next(run_id, config_path, config, console)
    return 0
