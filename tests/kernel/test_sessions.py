"""``data.sessions``: a file packing several recording sessions replays only those named,
trading exactly as the whole file does (the replayed session starts from its own REST
snapshot), and the other sessions' rows are counted, never made into events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sapphire.config.system import SystemConfig, parse_config
from sapphire.data.hftbacktest import stream_hftbacktest
from sapphire.data.sample import sample_instrument
from sapphire.kernel.runner import InProcessKernel
from tests.kernel.probes import traded

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "hftbacktest_mm.yaml"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
BBO = SHARED / "book" / "hftbacktest_binance-usdm_BTCUSDT_bbo.csv.gz"
START_NS = 1_723_161_257_000_000_000


def mm_config(
    tmp_path: Path, sessions: list[str], files: list[str] | None = None, seconds: int = 30
) -> SystemConfig:
    """The hftbacktest comparison's market maker, cut to its first ``seconds`` of quoting."""
    raw: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    if files is not None:
        raw["data"]["files"] = files
    raw["data"]["end_ns"] = START_NS + seconds * 1_000_000_000
    raw["data"]["sessions"] = sessions
    raw["storage"]["root"] = str(tmp_path)
    return parse_config(raw)


def test_one_session_trades_as_the_whole_file(tmp_path: Path) -> None:
    whole = InProcessKernel(mm_config(tmp_path / "a", []), "whole")
    whole.run()
    one = InProcessKernel(mm_config(tmp_path / "b", ["2024-08-08"]), "one")
    one.run()
    assert traded(one) == traded(whole)
    assert whole.summary()["fills"] > 0
    # the earlier sessions were read as columns only: far fewer warm-up windows
    assert one.steps < whole.steps
    assert one.summary()["sessions_missing"] == []


def test_a_session_in_no_file_is_shown_in_the_summary(tmp_path: Path) -> None:
    kernel = InProcessKernel(mm_config(tmp_path, ["2024-08-08", "1999-01-01"]), "typo")
    kernel.run()
    assert kernel.summary()["sessions_missing"] == ["1999-01-01"]
    assert kernel.summary()["fills"] > 0


def test_other_sessions_rows_are_counted_not_built() -> None:
    inst = sample_instrument()  # the bundled sample is the same USDT-M BTCUSDT
    everything = stream_hftbacktest(BBO, inst)
    whole = [(s, e) for s, e in everything.tagged() if s == "2024-08-08"]
    stream = stream_hftbacktest(BBO, inst)
    stream.select_sessions(["2024-08-08"])
    selected = list(stream.tagged())
    assert selected == whole and len(selected) > 0
    st = stream.stats
    assert st.balanced() and st.other_sessions == st.rows_in - 66_089  # README: 2024-08-08
    assert st.rows_in == everything.stats.rows_in == 162_554
    assert "other_sessions=" in st.summary()
    assert stream.sessions_seen == {"2024-08-08"}


def test_the_order_of_data_files_changes_nothing(tmp_path: Path) -> None:
    """On Binance's millisecond clock a trade, a diff and a book ticker often share a time:
    they are merged in the order they were received, not in the order the config lists the
    files (listed the other way round, the comparison's market maker made 201 fills, not 198;
    its first 60 s already trade differently)."""
    files = yaml.safe_load(CONFIG.read_text())["data"]["files"]
    listed = InProcessKernel(mm_config(tmp_path / "a", ["2024-08-08"], files, 60), "listed")
    listed.run()
    flipped = InProcessKernel(mm_config(tmp_path / "b", ["2024-08-08"], files[::-1], 60), "flip")
    flipped.run()
    assert traded(flipped) == traded(listed)
    assert listed.summary()["fills"] > 0
