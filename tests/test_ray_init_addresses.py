"""Every ``ray.init`` in the repository names its cluster.

Why: with no address, Ray attaches to the latest cluster started on the host
(/tmp/ray/ray_current_cluster), so under pytest-xdist one worker's test joined the other
worker's cluster and failed ("num_cpus ... must not be provided") only when their timings met.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _unnamed_inits() -> list[str]:
    found = []
    for folder in ("actors", "sapphire", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "init"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "ray"
                    and not node.args
                    and not any(k.arg == "address" for k in node.keywords)
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_ray_init_names_its_cluster() -> None:
    assert _unnamed_inits() == []
