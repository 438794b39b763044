"""The console's settings in the system config: loopback and a free port by default."""

from __future__ import annotations

import pytest

from sapphire.config.system import ConfigError, parse_config


def test_console_defaults_to_loopback_on_a_free_port() -> None:
    console = parse_config({}).console
    assert (console.enabled, console.host, console.port) == (True, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"prot": 8080}, r"unknown field `prot` - at `\$\.console`"),
        ({"port": 70000}, r"\$\.console\.port"),
        ({"poll_ms": 5}, r"\$\.console\.poll_ms"),
    ],
)
def test_bad_console_settings_name_the_field(raw: dict[str, int], where: str) -> None:
    with pytest.raises(ConfigError, match=rf"^system\.yaml: .*{where}"):
        parse_config({"console": raw}, "system.yaml")
