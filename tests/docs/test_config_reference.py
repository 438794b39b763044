"""docs/config-reference.md is generated from the config structs: regenerated here and
compared, so a field added, renamed or re-defaulted in code without the doc fails."""

from __future__ import annotations

from pathlib import Path

import msgspec

from sapphire.cli import main
from sapphire.cli.config_reference import DOC_PATH, render
from sapphire.config.system import SystemConfig
from tests.conftest import REPO_ROOT


def test_the_committed_reference_is_the_generated_one() -> None:
    committed = (REPO_ROOT / DOC_PATH).read_text(encoding="utf-8")
    assert committed == render(), (
        f"{DOC_PATH} is out of date: run `sapphire config-reference --out {DOC_PATH}`"
    )


def test_every_block_and_field_of_the_system_config_is_documented() -> None:
    text = render()
    for field in msgspec.structs.fields(SystemConfig):
        assert f"| `{field.encode_name}` |" in text
        if isinstance(field.default, msgspec.Struct):  # a block: it has its own section
            assert f"## `{field.encode_name}`" in text
    # the venue and agent params blocks are typed too, and documented with their defaults
    assert "## `exchange.params (kind: ccxt)`" in text and "| `sandbox` | bool | `false` |" in text
    assert "| `slow_span` | int | `100` | > 1 |" in text


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "ref.md"
    stale.write_text(render().replace("| `speed` |", "| `sped` |"))
    assert main(["config-reference", "--out", str(stale), "--check"]) == 1
    assert main(["config-reference", "--out", str(stale)]) == 0
    assert main(["config-reference", "--out", str(stale), "--check"]) == 0
