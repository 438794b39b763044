"""Claiming a run id: of processes starting under one id at the same moment, one runs."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from sapphire.config.system import parse_config
from sapphire.kernel.assembly import CLAIM_FILE, claim_run
from sapphire.kernel.builders import WiringError


def _claim(root: str, run_id: str, start: Any, out: Any) -> None:
    config = parse_config({"storage": {"root": root}})
    start.wait()
    try:
        claim_run(config, run_id)
        out.put("claimed")
        time.sleep(0.5)  # held, as a run holds it
    except WiringError:
        out.put("refused")


@pytest.mark.parametrize("dead_claim", [False, True])
def test_of_starters_at_one_moment_one_claims_the_id(tmp_path: Path, dead_claim: bool) -> None:
    # the marker was made empty, then written: a starter reading it in between saw no
    # owner, took it for a crashed run's and took the id over; two ran under one id
    ctx = multiprocessing.get_context("fork")
    starters = 4
    for trial in range(8):
        run_id = f"race{trial}"
        if dead_claim:  # a crashed run's claim, taken over by all of them at once
            folder = tmp_path / run_id
            folder.mkdir()
            gone = ctx.Process(target=time.sleep, args=(0,))
            gone.start()
            gone.join()
            (folder / CLAIM_FILE).write_text(f"{os.uname().nodename} {gone.pid}")
        start, out = ctx.Barrier(starters), ctx.Queue()
        procs = [
            ctx.Process(target=_claim, args=(str(tmp_path), run_id, start, out))
            for _ in range(starters)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=30)
        answers = sorted(out.get(timeout=5) for _ in range(starters))
        assert answers == ["claimed"] + ["refused"] * (starters - 1), (trial, answers)


def test_a_claim_is_readable_as_a_plain_file_is(tmp_path: Path) -> None:
    # made through a temporary file, the claim was 0600: another user sharing the store
    # root could not read it, took it for a crashed run's and took the live run's id over
    mask = os.umask(0)
    os.umask(mask)
    marker = claim_run(parse_config({"storage": {"root": str(tmp_path)}}), "modes")
    assert marker.stat().st_mode & 0o777 == 0o666 & ~mask
