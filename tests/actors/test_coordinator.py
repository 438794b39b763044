"""The coordinator's pure helpers (no Ray cluster): the shard readers' feed reports as one."""

from __future__ import annotations

from actors.coordinator import merge_feed_stats


def reader(rejected: dict[str, int], lags: dict[str, int], missing: list[str]) -> dict[str, object]:
    return {
        "rejected": rejected,
        "replay_cache": {"hits": 1},
        "sessions_missing": missing,
        "clamped": 2,
        "recorder_lags": lags,
    }


def test_shard_readers_report_as_one_merge_would() -> None:
    got = merge_feed_stats(
        [
            reader({"malformed": 3}, {"2024-08-08": 1_270_000_000, "2024-08-09": 5}, ["a", "b"]),
            reader({"malformed": 1, "out_of_order": 2}, {"2024-08-08": 40_000_000}, ["b"]),
        ]
    )
    assert got["rejected"] == {"malformed": 4, "out_of_order": 2}
    assert got["replay_cache"] == {"hits": 2}
    assert got["clamped"] == 4
    assert got["sessions_missing"] == ["b"]  # only what no reader found
    # two venues' files sharing a session label: the larger lag, whichever reader told it last
    assert got["recorder_lags"] == {"2024-08-08": 1_270_000_000, "2024-08-09": 5}
    swapped = merge_feed_stats(
        [
            reader({}, {"2024-08-08": 40_000_000}, []),
            reader({}, {"2024-08-08": 1_270_000_000}, []),
        ]
    )
    assert swapped["recorder_lags"] == {"2024-08-08": 1_270_000_000}
