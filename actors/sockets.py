"""A window's parallel round (the venues and every agent actor) over ZeroMQ sockets
(``ray.transport: sockets``).

Why not only Ray's compiled graph: its channel reads wait in a busy loop (Ray 2.60 polls
with ``sched_yield``), so every leaf burns a core between rounds. On a small machine the
waiting leaves take the CPU from the coordinator and from each other, and a round's
hand-offs wait for the scheduler. A socket read blocks in the kernel (epoll): a waiting leaf
costs nothing and wakes when its request arrives. On 2 cores the demo's Ray system steps
1.3x (agents in one actor) to 1.5x (an actor per agent) faster than with the compiled graph,
with identical stored tables (``benchmarks/RESULTS.md``).

Ray still owns everything but the bytes of a round: the actors, their placement, restarts,
checkpoints, and the plain calls any failure falls back to (exactly as with the compiled
graph: the coordinator drops the sockets and runs the step again as calls; a leaf that
finished the step answers from its stored output). The sockets are ``ipc://`` files in a
directory only this user can open, so a leaf and its coordinator must share a node; a leaf
elsewhere makes the round use the compiled graph instead. Requests and replies are pickled:
only this user's processes can connect, and they could already read each other's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import zmq

from actors.fanout import await_round
from sapphire.kernel.timing import Window

log = logging.getLogger(__name__)

POLL_MS = 200  # how often an idle server checks that it should still serve
FAST_WAIT_MS = 50  # how long the coordinator waits for a round inside its event loop


class OtherNode(RuntimeError):
    """A leaf runs on another node than the coordinator: no ipc socket reaches it."""


def _socket_dir() -> str:
    """A directory only this user can open (0700), for the round's socket files."""
    base = os.path.join(tempfile.gettempdir(), f"sapphire-rounds-{os.getuid()}")
    os.makedirs(base, mode=0o700, exist_ok=True)
    os.chmod(base, 0o700)  # the socket files inherit nothing looser from an old directory
    return base


class RoundServer:
    """The leaf's side: a thread answering each request with ``handler(request)``. The
    handler runs under ``lock``, which the actor's own methods (plain calls, rewinds) take
    too, so a round and a call never step the actor at once."""

    def __init__(self, handler: Callable[[bytes], bytes], lock: threading.Lock) -> None:
        self._handler = handler
        self._lock = lock
        self.endpoint = f"ipc://{_socket_dir()}/{uuid.uuid4().hex}.sock"
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="round-server", daemon=True)
        self._thread.start()
        self._bound.wait(10.0)

    def _serve(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.endpoint)
        self._bound.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(POLL_MS):
                    continue
                request = sock.recv()
                try:
                    with self._lock:
                        reply = self._handler(request)
                except Exception as exc:  # the coordinator falls back to calls, which say why
                    log.exception("round request failed")
                    reply = pickle.dumps(RoundError(f"{type(exc).__name__}: {exc}"))
                sock.send(reply)
        finally:
            sock.close(0)
            with contextlib.suppress(OSError):
                os.unlink(self.endpoint.removeprefix("ipc://"))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


class RoundLeaf:
    """What a leaf actor (the venue's, an agent host's) adds to serve rounds: ``_lock`` and
    ``_round`` set in its ``__init__``, and ``_round_request`` answering one request."""

    _lock: threading.Lock
    _round: RoundServer | None

    def _round_request(self, request: bytes) -> bytes:
        raise NotImplementedError

    def serve_round(self) -> tuple[str, str]:
        """Serve the coordinator's rounds on a socket (a new one; any old one stops): this
        actor's node and the socket's endpoint."""
        import ray

        self.stop_round()
        self._round = RoundServer(self._round_request, self._lock)
        return str(ray.get_runtime_context().get_node_id()), self._round.endpoint

    def stop_round(self) -> None:
        if self._round is not None:
            self._round.stop()
            self._round = None


class RoundError:
    """A leaf's step failed inside a round (sent back instead of an answer)."""

    def __init__(self, why: str) -> None:
        self.why = why


class SocketFanout:
    """The coordinator's side: one request socket per leaf (venues first, then agent
    actors), the same interface as ``actors.fanout.CompiledFanout``."""

    def __init__(
        self,
        sockets: list[zmq.Socket[bytes]],
        leaves: list[str],
        venues: int,
        leaf_shard: dict[str, int],
        handles: list[Any],
    ) -> None:
        self._sockets = sockets
        self._poller = zmq.Poller()
        for sock in sockets:
            self._poller.register(sock, zmq.POLLIN)
        self.leaves = leaves
        self.venues = venues
        self._leaf_shard = leaf_shard
        self._handles = handles

    @classmethod
    async def build(
        cls,
        venues: Sequence[Any],
        agents: dict[str, Any],
        leaves: list[str],
        leaf_shard: dict[str, int],
        node_id: str,
    ) -> SocketFanout:
        handles = [*venues, *(agents[leaf] for leaf in leaves)]
        served = await asyncio.gather(*(h.serve_round.remote() for h in handles))
        elsewhere = [i for i, (node, _) in enumerate(served) if node != node_id]
        if elsewhere:
            await asyncio.gather(*(handles[i].stop_round.remote() for i in range(len(handles))))
            raise OtherNode(f"{len(elsewhere)} leaf actor(s) on another node")
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sockets = []
        for _, endpoint in served:
            sock = ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            sockets.append(sock)
        return cls(sockets, leaves, len(venues), leaf_shard, handles)

    async def run(
        self,
        step: int,
        window: Window,
        events: Sequence[bytes],
        commands: Sequence[bytes],
        barrier: bool,
        reports: Sequence[list[bytes]],
        timeout_s: float,
        restarted: Callable[[], Awaitable[str]],
    ) -> tuple[list[bytes], list[tuple[list[bytes], list[Any]]]]:
        """As ``CompiledFanout.run``: each venue's reports and each agent actor's answer;
        raises on any failure (TimeoutError past ``timeout_s``)."""
        n = self.venues
        requests: list[tuple[int, Window, bytes, bytes | list[bytes], bool]] = [
            (step, window, events[k], commands[k], barrier) for k in range(n)
        ]
        requests += [
            (step, window, events[self._leaf_shard[leaf]], reports[i], barrier)
            for i, leaf in enumerate(self.leaves)
        ]
        for sock, request in zip(self._sockets, requests, strict=True):
            # a request socket with its peer connected takes a request at once (else EAGAIN
            # raises, and the step runs as calls)
            sock.send(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL), zmq.NOBLOCK)
        replies: list[bytes | None] = [None] * len(self._sockets)
        index = {sock: i for i, sock in enumerate(self._sockets)}

        def collect(timeout_ms: int) -> int:
            """Take the answers that arrive within ``timeout_ms``; how many are missing."""
            for sock, _ in self._poller.poll(timeout_ms):
                if replies[index[sock]] is None:
                    replies[index[sock]] = sock.recv(zmq.NOBLOCK)
            return sum(r is None for r in replies)

        # A round answers in about a millisecond: wait for it right here, in the event loop,
        # for up to FAST_WAIT_MS (asyncio's machinery per answer cost ~6 % of the
        # coordinator, py-spy). A slower round (a busy machine, a hung or restarted leaf)
        # is waited for off the loop, as every transport waits (``await_round``).
        loop = asyncio.get_running_loop()
        started = loop.time()
        fast_end = started + FAST_WAIT_MS / 1000
        missing = len(replies)
        while missing and loop.time() < fast_end:
            missing = collect(max(1, int((fast_end - loop.time()) * 1000)))
        if missing:

            async def answered(wait_s: float) -> bool:
                return await asyncio.to_thread(collect, max(1, int(wait_s * 1000))) == 0

            await await_round(answered, timeout_s - (loop.time() - started), restarted)
        answers = [pickle.loads(r) for r in replies if r is not None]
        failed = [a for a in answers if isinstance(a, RoundError)]
        if failed:
            raise RuntimeError(f"a leaf's step failed in the round: {failed[0].why}")
        return list(answers[:n]), list(answers[n:])

    async def close(self, timeout_s: float = 30.0) -> bool:
        """Close the sockets and ask the leaves to stop serving (best effort: a leaf that
        is gone or hung stops with its process). Always clean: a leaf serves a new round
        whenever asked, whatever an old one left."""
        for sock in self._sockets:
            sock.close(0)
        stops = [h.stop_round.remote() for h in self._handles]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*stops), timeout_s)
        return True
