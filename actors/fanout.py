"""A window's parallel round (the venue and every agent) as one Ray Compiled Graph.

The coordinator sends the same step to the execution actor and to each agent actor every
window; as plain actor calls that round costs about 2 ms on 2 cores (four calls), where a
compiled graph moves the same arguments through shared-memory channels in about 0.15 ms
(``ray.transport: compiled``). The leaves run their ordinary ``step`` methods, so barriers,
checkpoints and the exactly-once step rule are the same as with calls.

Why the answers are read by a thread per round, not with Ray's asyncio graph: a channel read
waits in a busy loop (Ray 2.60 polls with ``sched_yield``; one waiting reader burns a core).
The asyncio graph keeps a reader thread in that loop for the whole run, also while the
coordinator runs its own stage; on 2 cores that took CPU from the leaves and the coordinator.
A read started when a round is sent and ended with its answers spins only while the round is
out: the demo's Ray system stepped 1.2-1.3x faster (benchmarks/RESULTS.md).

Failures are not handled here: any error (an actor that died, a hung agent, a channel
error) makes the coordinator drop the graph and run that same step again as plain calls,
which restart, rewind and quarantine as they always do. A leaf that finished the step in
the graph answers it again from its stored output, so nothing runs twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from sapphire.kernel.timing import Window

log = logging.getLogger(__name__)


def bytes_only_channels() -> None:
    """Tell Ray's channel layer that this process moves no tensors: call it in every process
    a graph runs in. Its executor asks whether torch is available before each operation and
    imports it to find out; where the ``llm-hf`` extra installed torch, each leaf then spent
    seconds of CPU and ~200 MB importing it during the first round (py-spy: most of an agent
    actor's first seconds). Our rounds carry bytes only."""
    from ray.experimental.channel.common import ChannelContext

    ChannelContext.get_current()._torch_available = False


# The venues' reports of a round, awaited after the agents' answers: the coordinator's
# stage needs only the agents' outputs, and the venues' reports reach the system from the
# next window on (``sapphire.kernel.timing``), so the venues run beside the stage too.
VenueAnswers = Callable[[], Awaitable[list[bytes]]]


def no_work() -> None:
    """What a round runs while it is out when the caller has nothing to do then."""


# Ray's switch for its "blocking ray.get inside async actor" warning (ray._common.constants)
_WARN_BLOCKING_GET = "RAY_WARN_BLOCKING_GET_INSIDE_ASYNC"


@contextlib.contextmanager
def _ray_gets_expected() -> Iterator[None]:
    """Compiling a graph and tearing it down wait on the leaves with Ray's own blocking gets
    (GPU ids, teardown acks), in the async coordinator's process: the compile once at start
    and after a recovery, before any round; the teardown on a worker thread (``close``). Ray
    warns about the first blocking get in an async actor, which put a scary line into every
    run's console. The switch is off only around these two, so a blocking get anywhere else
    in the coordinator (a real bug) is still reported."""
    saved = os.environ.get(_WARN_BLOCKING_GET)
    os.environ[_WARN_BLOCKING_GET] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_WARN_BLOCKING_GET, None)
        else:
            os.environ[_WARN_BLOCKING_GET] = saved


def _forget(reading: asyncio.Future[Any]) -> None:
    """A round given up on: its read ends by itself (the deadline, or the graph's teardown);
    what it raises then is no news."""
    reading.add_done_callback(lambda f: f.cancelled() or f.exception())


async def await_round(
    answered: Callable[[float], Awaitable[bool]],
    timeout_s: float,
    restarted: Callable[[], Awaitable[str]],
) -> None:
    """Wait for a round's answers (``answered(s)``: whether all are in after waiting up to
    ``s`` more seconds) a second at a time, asking ``restarted`` between (which leaf Ray
    restarted, or ""): a transport does not always see a leaf's death, and waiting out the
    timeout would take a restarted agent for a hung one. Raises TimeoutError past
    ``timeout_s``, RuntimeError naming a restarted leaf. Every round transport waits so."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        left = deadline - loop.time()
        if await answered(min(1.0, max(left, 0.0))):
            return
        if left <= 1.0:
            raise TimeoutError(f"no answer in {timeout_s} s")
        who = await restarted()
        if who:
            raise RuntimeError(f"{who} restarted during the round")


class CompiledFanout:
    """The compiled round over the venue actors (one per shard) and the agent actors
    ``leaves`` (in that order)."""

    def __init__(self, graph: Any, leaves: list[str], venues: int) -> None:
        self._graph = graph
        self.leaves = leaves
        self.venues = venues

    @classmethod
    def build(
        cls,
        venues: Sequence[Any],
        agents: dict[str, Any],
        leaves: list[str],
        leaf_shard: dict[str, int],
    ) -> CompiledFanout:
        from ray.dag import InputNode, MultiOutputNode

        # Ray logs each teardown's steps at INFO into the run's console: its warnings stay
        logging.getLogger("ray.dag.compiled_dag_node").setLevel(logging.WARNING)
        n = len(venues)
        with InputNode() as inp:
            # inputs: step, window, barrier, each shard's events, each shard's commands, then
            # per agent actor the report batches of the agents it hosts
            step, window, barrier = inp[0], inp[1], inp[2]
            events = [inp[3 + k] for k in range(n)]
            commands = [inp[3 + n + k] for k in range(n)]
            outputs = [
                venue.step.bind(step, window, events[k], commands[k], barrier)
                for k, venue in enumerate(venues)
            ]
            outputs += [
                agents[leaf].step.bind(
                    step, window, events[leaf_shard[leaf]], inp[3 + 2 * n + i], barrier
                )
                for i, leaf in enumerate(leaves)
            ]
            dag = MultiOutputNode(outputs)
        with _ray_gets_expected():
            graph = dag.experimental_compile()
        return cls(graph, leaves, n)

    async def start(
        self,
        step: int,
        window: Window,
        events: Sequence[bytes],
        commands: Sequence[bytes],
        barrier: bool,
        reports: Sequence[list[bytes]],
        timeout_s: float,
        restarted: Callable[[], Awaitable[str]],
        busy: Callable[[], None] = no_work,
    ) -> tuple[VenueAnswers, list[tuple[list[bytes], list[Any]]]]:
        """Each agent actor's ``(outputs per hosted agent, llm records)``, in ``leaves``
        order, and each venue's reports (shard order) to await; raises on any failure
        (TimeoutError past ``timeout_s``). ``busy`` runs once the round is out. A round that
        takes over a second asks ``restarted`` each second (which leaf Ray restarted, or
        ""): the graph does not always see a leaf's death, and waiting out the timeout would
        take a restarted agent for a hung one. A graph answers all at once: the venues'
        reports are in when the agents' are."""
        refs = self._graph.execute(step, window, barrier, *events, *commands, *reports)
        busy()

        def read() -> list[Any]:
            # each answer within the round's timeout; a read cut by the deadline ends itself
            deadline = time.monotonic() + timeout_s
            return [ref.get(max(0.0, deadline - time.monotonic())) for ref in refs]

        reading = asyncio.ensure_future(asyncio.to_thread(read))

        async def answered(wait_s: float) -> bool:
            done, _ = await asyncio.wait({reading}, timeout=wait_s)
            return bool(done)

        try:
            await await_round(answered, timeout_s, restarted)
        except BaseException:
            _forget(reading)
            raise
        results = reading.result()

        async def venues() -> list[bytes]:
            return list(results[: self.venues])

        return venues, list(results[self.venues :])

    async def close(self, timeout_s: float = 30.0) -> bool:
        """Tear the graph down so the actors take another graph again; a teardown that
        hangs on a hung actor is left behind, never waited for forever. False: not clean
        (an actor may still serve this graph, so no other graph should be compiled)."""

        def teardown() -> None:
            with _ray_gets_expected():
                self._graph.teardown()

        try:
            await asyncio.wait_for(asyncio.to_thread(teardown), timeout_s)
        except Exception as exc:  # hung, or failed
            log.warning("compiled graph teardown: %s: %s", type(exc).__name__, exc)
            return False
        return True
