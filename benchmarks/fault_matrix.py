"""The fault matrix as a table: fault x mode x seeds, held or failed.

Runs the fault tests (real Ray, real ccxt against the Binance double, a real tmpfs for the
full disk) through pytest and tabulates their outcomes from pytest's JUnit XML. A cell
"held" means every check of that test passed: the journal equals the venue's record, the
store has no gap or duplicate, positions equal the unfaulted run (paper) or the venue's
trades (live), and nothing reported success that did not happen.

    .venv/bin/python benchmarks/fault_matrix.py          # prints the Markdown table
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    "tests/actors/test_chaos.py",
    "tests/actors/test_resume.py",
    "tests/actors/test_multinode.py",
    "tests/actors/test_process_faults.py",
    "tests/actors/test_system.py",
    "tests/actors/test_fault_matrix.py",
    "tests/actors/test_live_restart.py",
]

# (test name pattern) -> (fault, mode); a "seed" or "victim" group refines the cell
CELLS = [
    (
        r"test_killing_every_actor_mid_step\S*\[(?P<seed>\d+)\]",
        "kill every actor kind mid-step, in turn",
        "paper",
    ),
    (r"test_a_crashed_run_resumes", "every actor killed, --resume", "paper"),
    (r"test_a_sigkilled_driver_resumes", "driver process SIGKILLed, --resume", "paper"),
    (r"test_agents_spread_and_a_lost_node", "node removed", "paper"),
    (r"test_a_full_disk_fails_loudly", "disk full, then --resume", "paper"),
    (r"test_bad_agents_and_a_failing_venue", "venue errors, hung and raising agents", "paper"),
    (
        r"test_live_every_actor_killed_mid_step\[(?P<seed>\d+)\]",
        "kill every actor kind mid-step, in turn",
        "live",
    ),
    (r"test_live_driver_killed_and_resumed\[(?P<seed>\d+)\]", "driver killed, resume", "live"),
    (
        r"test_live_venue_faults\[(?P<seed>\d+)\]",
        "venue faults (429, 5xx, stalls, lost/late answers)",
        "live",
    ),
    (r"test_live_disk_full_then_resume", "disk full, then resume", "live"),
    (r"test_a_new_run_after_a_crash", "crash, then a new run id", "live"),
    (r"test_a_refused_api_key", "refused API key", "live"),
]


def main() -> int:
    import argparse

    # --help (or any option) says what this runs before it starts Ray clusters for minutes
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        xml_path = Path(tmp) / "junit.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={xml_path}",
            *MODULES,
        ]
        subprocess.run(cmd, cwd=ROOT, check=False)
        tree = ET.parse(xml_path)
    cells: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for case in tree.iter("testcase"):
        name = case.get("name", "")
        outcome = "held"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "FAILED"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        for pattern, fault, mode in CELLS:
            match = re.search(pattern, name)
            if match:
                groups = match.groupdict()
                key = (fault.format(victim=groups.get("victim") or ""), mode)
                cells[key][outcome].append(groups.get("seed") or "-")
                break
    print("| fault | mode | runs (seeds) | held | failed |")
    print("|---|---|---|---|---|")
    for (fault, mode), outcomes in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        seeds = sorted({s for runs in outcomes.values() for s in runs})
        runs = sum(len(v) for v in outcomes.values())
        shown = ", ".join(s for s in seeds if s != "-") or "fixed"
        failed = len(outcomes.get("FAILED", [])) + len(outcomes.get("skipped", []))
        print(
            f"| {fault} | {mode} | {runs} ({shown}) | {len(outcomes.get('held', []))} | {failed} |"
        )
    return 0 if not any("FAILED" in o for o in cells.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
