"""``data.files`` is read by ``source: files`` only: given with another source (the bundled
sample, the live feed) it was ignored without a word and the sample ran, exit 0."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sapphire.config.system import ConfigError, load_config, parse_config
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("source", ["sample", "ccxt"])
def test_data_files_with_a_source_that_does_not_read_them_is_refused(
    tmp_path: Path, source: str
) -> None:
    config = tmp_path / "files_unused.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": source, "files": ["mine.csv.gz"]}}))
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{config}: data.files ") and f"data.source {source!r}" in message


def test_the_sources_that_need_no_files_still_load() -> None:
    # instrument_files stay valid with the sample (a custom instrument for its data)
    parse_config({"data": {"source": "sample", "instrument_files": ["inst.json"]}})
    parse_config({"data": {"source": "files", "files": ["a.csv"], "instrument_files": ["i.json"]}})
    # every system config the repository ships still loads
    shipped = [
        p
        for p in sorted((REPO_ROOT / "configs").glob("*.yaml"))
        if not {"name", "backtest", "space"} & set(yaml.safe_load(p.read_text()) or {})
    ]
    assert len(shipped) > 5
    for path in shipped:
        load_config(path)
