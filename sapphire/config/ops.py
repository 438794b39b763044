"""Operations settings: where metrics and the dashboard listen, and the price table for cost.

Both are loopback by default: exposing them is a decision a deployment makes explicitly
(``metrics.host: 0.0.0.0`` behind a firewall or inside a cluster network).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    host: str = "127.0.0.1"  # where Ray's per-node Prometheus endpoint listens
    export_port: Port = 0  # 0: Ray picks a free port (see ray.nodes()[i]["MetricsExportPort"])
    report_interval_ms: Annotated[int, msgspec.Meta(ge=100)] = 10_000
    include_dashboard: bool = False
    dashboard_host: str = "127.0.0.1"
    dashboard_port: Port = 8265

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS


class CostConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    prices_file: str = "ops/prices.yaml"
    profile: str = "on_prem"  # a key of the price table's ``profiles``
