"""The cluster address check before ``ray.init`` (Ray retries an unreachable one for ever)."""

from __future__ import annotations

import socket

import pytest

from actors.system import _reachable


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_a_listening_cluster_passes_and_a_closed_port_is_refused(
    family: socket.AddressFamily, host: str
) -> None:
    try:
        server = socket.socket(family)
        server.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} here")
    with server:
        server.listen()
        port = server.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host  # an IPv6 address in brackets
        _reachable(f"{shown}:{port}")
        _reachable(f"ray://{shown}:{port}")
    with pytest.raises(ConnectionError, match="unreachable"):
        _reachable(f"{shown}:{port}")
    _reachable("auto")  # Ray finds those itself
