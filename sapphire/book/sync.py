"""Columnar sequencing: which rows of a recorded depth file to apply, and in which order.

The same Binance sync rule as :class:`sapphire.book.l2.L2Book` (see its module docstring),
written over columns for :mod:`sapphire.book.fast`. A *message* is a run of consecutive rows
with the same ``(is_snapshot, U, u, pu)``. Diffs that arrive while the book is not synced
are held (at most ``max_pending`` messages, oldest dropped first) and replayed through the
rule right after the next snapshot, so the resulting row order is what a live consumer that
buffers during its REST snapshot request would apply. Missing ids (spot ``pu``, snapshot
``U``) must be passed as 0; a diff with all three ids 0 is a feed without ids, applied as it
comes, and a snapshot older than the synced book is dropped (both as ``L2Book`` does).
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np
import numpy.typing as npt

I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class SyncPlan(NamedTuple):
    order: I64Array  # row indices to apply, in order
    reset: BoolArray  # per planned row: clear the book first (the first row of a snapshot)
    msg_end: BoolArray  # per planned row: last row of its message (the book is consistent)
    gaps: int  # sequence breaks detected while synced
    stale: int  # rows dropped as already contained in the book


@nb.njit(cache=True, nogil=True)
def _plan(
    is_snap: BoolArray, first: I64Array, final: I64Array, prev: I64Array, max_pending: int
) -> tuple[I64Array, BoolArray, BoolArray, int, int, int]:
    n = final.shape[0]
    starts = np.empty(n + 1, np.int64)
    n_msgs = 0
    for k in range(n):
        if (
            k == 0
            or is_snap[k] != is_snap[k - 1]
            or final[k] != final[k - 1]
            or first[k] != first[k - 1]
            or prev[k] != prev[k - 1]
        ):
            starts[n_msgs] = k
            n_msgs += 1
    starts[n_msgs] = n

    order = np.empty(n, np.int64)
    reset = np.zeros(n, np.bool_)
    msg_end = np.zeros(n, np.bool_)
    pending = np.empty(max(n_msgs, 1), np.int64)
    queue = np.empty(max(n_msgs, 1), np.int64)
    n_out = n_pending = gaps = stale = 0
    synced = first_after = False
    last = 0
    for m in range(n_msgs):
        s, e = starts[m], starts[m + 1]
        if is_snap[s] and synced and 0 < final[s] <= last:
            continue  # older than the synced book: dropped, as L2Book.apply_snapshot does
        if not is_snap[s] and first[s] == 0 and final[s] == 0 and prev[s] == 0:
            # no update ids (Tardis): applied as they come, the book synced (L2Book)
            for k in range(s, e):
                order[n_out] = k
                n_out += 1
            msg_end[n_out - 1] = True
            synced = True
            continue
        if is_snap[s]:
            for k in range(s, e):
                order[n_out] = k
                n_out += 1
            reset[n_out - (e - s)] = True
            msg_end[n_out - 1] = True
            last = final[s]
            synced = first_after = True
            n_queue = n_pending
            queue[:n_queue] = pending[:n_pending]
            n_pending = 0
        else:
            queue[0] = m
            n_queue = 1
        for qi in range(n_queue):
            mm = queue[qi]
            s, e = starts[mm], starts[mm + 1]
            if not synced:
                if n_pending == max_pending:
                    pending[: n_pending - 1] = pending[1:n_pending]
                    n_pending -= 1
                pending[n_pending] = mm
                n_pending += 1
                continue
            if final[s] <= last:
                stale += e - s
                continue
            futures = prev[s] != 0
            if first_after:
                ok = (first[s] <= last + 1 <= final[s]) or (futures and prev[s] == last)
            elif futures:
                ok = prev[s] == last
            else:
                ok = first[s] == last + 1
            if not ok:
                gaps += 1
                synced = False
                pending[0] = mm
                n_pending = 1
                continue
            for k in range(s, e):
                order[n_out] = k
                n_out += 1
            msg_end[n_out - 1] = True
            last = final[s]
            first_after = False
    return order, reset, msg_end, n_out, gaps, stale


def sync_plan(
    is_snapshot: npt.ArrayLike,
    first_update_id: npt.ArrayLike,
    final_update_id: npt.ArrayLike,
    prev_final_update_id: npt.ArrayLike,
    *,
    max_pending: int = 100_000,
) -> SyncPlan:
    """Plan the replay of one recording (rows in arrival order; see the module docstring)."""
    if max_pending < 1:
        raise ValueError(f"max_pending must be >= 1, got {max_pending}")
    snap = np.ascontiguousarray(is_snapshot, dtype=np.bool_)
    first, final, prev = (
        np.ascontiguousarray(c, dtype=np.int64)
        for c in (first_update_id, final_update_id, prev_final_update_id)
    )
    if snap.ndim != 1 or not snap.shape == first.shape == final.shape == prev.shape:
        raise ValueError("sync_plan columns must be 1-d and of the same length")
    order, reset, msg_end, n_out, gaps, stale = _plan(snap, first, final, prev, max_pending)
    return SyncPlan(order[:n_out], reset[:n_out], msg_end[:n_out], int(gaps), int(stale))
