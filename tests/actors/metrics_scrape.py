"""Reading Ray's live Prometheus endpoint in tests: scrape, sum a metric over its series."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Mapping

from prometheus_client.parser import text_string_to_metric_families


def scrape(target: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def total(
    samples: Mapping[str, list[tuple[dict[str, str], float]]],
    name: str,
    **labels: str,
) -> float:
    """Sum of every series of ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(
        value
        for series, value in samples.get(name, [])
        if all(series.get(k) == v for k, v in labels.items())
    )


def wait_for(
    targets: list[str],
    ready: Callable[[dict[str, list[tuple[dict[str, str], float]]]], bool],
    timeout_s: float = 30.0,
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Scrape all targets until ``ready`` holds on the merged samples; the last scrape if not."""
    deadline = time.monotonic() + timeout_s
    while True:
        merged: dict[str, list[tuple[dict[str, str], float]]] = {}
        for target in targets:
            for name, series in scrape(target).items():
                merged.setdefault(name, []).extend(series)
        if ready(merged) or time.monotonic() > deadline:
            return merged
        time.sleep(0.5)
