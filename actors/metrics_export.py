"""Where Sapphire's metrics are served: Ray's per-node metrics endpoint, kept on loopback for a
single-host run unless the config says otherwise. The metrics themselves: ``actors.metrics``."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def bind_loopback() -> None:
    """Make a local Ray node (and so its metrics endpoint) listen on 127.0.0.1 only.

    Ray resolves ``--node-ip-address=127.0.0.1`` to the host's routable address, and its
    metrics agent binds all interfaces unless the node IP is loopback. Ray's single-host mode
    (the one it uses on laptops) keeps the node on loopback: the env var reaches the raylet and
    agent processes, the constant covers this (already imported) driver. Only for a
    single-host cluster: a multi-node cluster needs routable addresses.
    """
    os.environ[_LOOPBACK_ENV] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def ray_init_options(config: Any) -> dict[str, Any]:
    """``ray.init`` keyword arguments for a ``sapphire.config.ops.MetricsConfig`` when this
    process starts a local cluster; call before ``ray.init``. Applies ``bind_loopback`` for a
    loopback host."""
    options: dict[str, Any] = {
        "include_dashboard": config.include_dashboard,
        "dashboard_host": config.dashboard_host,
        "dashboard_port": config.dashboard_port,
        "_system_config": {"metrics_report_interval_ms": config.report_interval_ms},
    }
    if config.export_port:
        options["_metrics_export_port"] = config.export_port
    if not config.enabled:
        options["_system_config"]["enable_metrics_collection"] = False
    elif config.loopback:
        bind_loopback()
    return options


def scrape_targets() -> list[str]:
    """``host:port`` of every alive node's metrics endpoint (driver side, Ray initialised)."""
    import ray

    return [
        f"{node['NodeManagerAddress']}:{node['MetricsExportPort']}"
        for node in ray.nodes()  # type: ignore[no-untyped-call]  # unannotated in Ray 2.60
        if node.get("Alive") and node.get("MetricsExportPort")
    ]


def targets_file() -> Path:
    """This process's Prometheus file-based discovery list (``ops/prometheus/prometheus.yml``
    reads every ``prom-targets-*.json`` there)."""
    return Path(tempfile.gettempdir()) / "sapphire" / f"prom-targets-{os.getpid()}.json"


def write_scrape_targets(path: Path | None = None) -> Path | None:
    """Write the cluster's metrics endpoints as a Prometheus ``file_sd`` list; removed when
    this process exits. Why: Ray writes its own discovery file only from its dashboard,
    which a local run starts without (``metrics.include_dashboard: false``), so the shipped
    Prometheus found no target and every panel stayed empty. None when there are none."""
    targets = scrape_targets()
    if not targets:
        return None
    path = targets_file() if path is None else path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": targets, "labels": {"job": "ray"}}]))
    tmp.replace(path)  # Prometheus never reads half a file
    atexit.register(_remove, path)
    return path


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
