"""BigQuery behind the running system (real google-cloud-bigquery client against the
bqemulator): ``sapphire run`` streams every table through the same exactly-once sink, with
the sink killed mid-run, and the stored rows equal a Parquet run's row for row; ``sapphire
query`` and ``sapphire report`` read the run back from BigQuery."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sapphire.adapters.stores import BigQuerySource, bigquery_params
from sapphire.cli import main
from tests.actors.harness import TABLES, make_config, run
from tests.ray_local import init_local, release_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    init_local(num_cpus=4, include_dashboard=False, namespace="sapphire-bq")
    yield
    release_local()


def storage(tmp_path: Path, emulator: Any) -> dict[str, Any]:
    return {
        "backend": "bigquery",
        "root": str(tmp_path),  # checkpoints and the firm kill switch stay on disk
        "batch_rows": 500,
        "flush_interval_s": 0.2,
        "params": {
            "project": emulator.project,
            "dataset": f"run_{uuid.uuid4().hex[:8]}",
            "api_endpoint": emulator.endpoint,
            "anonymous": True,
        },
    }


def test_the_system_streams_to_bigquery_exactly_once_through_a_sink_kill(
    ray_local: None, bq_emulator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parquet = run(make_config(tmp_path / "pq"), "bq-vs-parquet")
    config = make_config(tmp_path / "bq", storage=storage(tmp_path / "bq", bq_emulator))
    outcome = run(config, "bq-vs-parquet", chaos=("sink", 9))
    assert outcome.victim_restarted, "the sink was not killed and restarted"
    source = BigQuerySource(bigquery_params(config.storage))
    assert parquet.rows["fills"].height > 0
    for table in TABLES:
        got = source.read(table, "bq-vs-parquet").drop("run_id", "date").collect().sort("seq")
        keys = got.select("producer_id", "seq")
        assert keys.n_unique() == got.height, f"{table}: a row stored twice"
        assert got.equals(parquet.rows[table]), f"{table}: BigQuery differs from Parquet"
    # read back by the CLI from the config's store
    path = tmp_path / "bq.yaml"
    path.write_bytes(msgspec.yaml.encode(msgspec.to_builtins(config)))
    capsys.readouterr()
    args = ["query", "bq-vs-parquet", "--config", str(path), "--table", "fills", "--format"]
    assert main([*args, "csv", "--limit", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == parquet.rows["fills"].height + 1  # header + every fill
    out = tmp_path / "report"
    assert main(["report", "bq-vs-parquet", "--config", str(path), "--out", str(out)]) == 0
    assert (out / "bq-vs-parquet.html").is_file()
    assert main(["query", "no-such-run", "--config", str(path)]) == 1
