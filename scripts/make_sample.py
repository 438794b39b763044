"""Build the bundled sample ``sapphire/samples/binance-usdm-btcusdt/`` from ../shared/data.

A 90-second slice of the Binance USDT-M BTCUSDT recording, session 2024-08-08, starting at
the session's first message (the REST snapshot arrives 0.3 s later, so the book can be
rebuilt). Values are copied as the exact decimal strings of the source CSVs; gzip headers
carry no timestamp so the output is byte-for-byte reproducible.

    .venv/bin/python scripts/make_sample.py [--shared ../shared/data] [--seconds 90]
"""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

import polars as pl

from sapphire.data.instruments import instrument_json, known_instrument

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "sapphire" / "samples" / "binance-usdm-btcusdt"
SESSION = "2024-08-08"
FILES = {
    "depth": "book/hftbacktest_binance-usdm_BTCUSDT_depth.csv.gz",
    "trades": "trades/hftbacktest_binance-usdm_BTCUSDT_trades.csv.gz",
    "bbo": "book/hftbacktest_binance-usdm_BTCUSDT_bbo.csv.gz",
}
LICENSE = """MIT License

Copyright (c) 2022 nkaz001@protonmail.com

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""
ATTRIBUTION = """# Attribution

The files in this folder are a {seconds}-second slice (local receive time
{start_ns} .. {end_ns} ns, session `{session}`) of real Binance USDT-M BTCUSDT market data
recorded by the hftbacktest project:

* Source: https://github.com/nkaz001/hftbacktest, file `examples/usdm/btcusdt_20240808.gz`
  at commit 5f3ec40b2afb764e0fea112f941ed85523ef4e88, flattened losslessly into the
  hftbacktest CSV layout (`hftbacktest_binance-usdm_BTCUSDT_{{depth,trades,bbo}}.csv.gz`
  in Sapphire's shared data set).
* Licence: MIT, see `LICENSE` in this folder (text as published in the upstream
  repository's `LICENSE` file).
* Rows: depth {depth} (of which {snapshot} snapshot levels), trades {trades}, bbo {bbo}.

`instrument.json` is Sapphire's Binance USDT-M BTCUSDT definition (tick 0.1, lot 0.001).
Regenerate everything with `python scripts/make_sample.py`.
"""


def _gzip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=9) as handle:
        handle.write(data)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--seconds", type=int, default=90)
    args = parser.parse_args()
    frames = {
        kind: pl.read_csv(args.shared / rel, infer_schema_length=0).filter(
            pl.col("session") == SESSION
        )
        for kind, rel in FILES.items()
    }
    start = min(int(f["local_ts_ns"].cast(pl.Int64).min()) for f in frames.values())  # type: ignore[arg-type]
    end = start + args.seconds * 1_000_000_000
    OUT.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for kind, frame in frames.items():
        ts = pl.col("local_ts_ns").cast(pl.Int64)
        part = frame.filter((ts >= start) & (ts < end))
        counts[kind] = part.height
        name = Path(FILES[kind]).name
        (OUT / name).write_bytes(_gzip(part.write_csv().encode()))
    snapshot = frames["depth"].filter(
        (pl.col("is_snapshot") == "1") & (pl.col("local_ts_ns").cast(pl.Int64) < end)
    )
    instrument = known_instrument("binance-usdm", "BTCUSDT")
    assert instrument is not None
    (OUT / "instrument.json").write_bytes(instrument_json(instrument))
    (OUT / "LICENSE").write_text(LICENSE)
    (OUT / "ATTRIBUTION.md").write_text(
        ATTRIBUTION.format(
            seconds=args.seconds,
            start_ns=start,
            end_ns=end,
            session=SESSION,
            snapshot=snapshot.height,
            **counts,
        )
    )
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB): {counts}, snapshot levels {snapshot.height}")


if __name__ == "__main__":
    main()
