"""A window's parallel round (the venues and every agent actor) over Unix-domain sockets
(``ray.transport: sockets``).

Why not only Ray's compiled graph: its channel reads wait in a busy loop (Ray 2.60 polls
with ``sched_yield``), so every leaf burns a core between rounds. On a small machine the
waiting leaves take the CPU from the coordinator and from each other, and a round's
hand-offs wait for the scheduler. A socket read blocks in the kernel: a waiting leaf costs
nothing and wakes when its request arrives. On 2 cores the demo's Ray system steps 1.3x
(agents in one actor) to 1.5x (an actor per agent) faster than with the compiled graph,
with identical stored tables (``benchmarks/RESULTS.md``).

Why plain stream sockets and not ZeroMQ (the first version): a ZeroMQ message crosses two
I/O threads on its way (the sender's and the receiver's), each a thread wake-up on top of
the two processes'. Here the bytes are written by the thread that has them and read by the
thread that waits for them, framed by an 8-byte length, one request and one reply per leaf
in lockstep; nothing needs ZeroMQ's queues or reconnection. On the same 2-core host, tick ->
order p50/p95 went from 468-488/1,207-1,211 us to 362-391/962-1,047 us, and a bare round
trip's mean from 150-194 to 98-119 us (``benchmarks/RESULTS.md``).

Ray still owns everything but the bytes of a round: the actors, their placement, restarts,
checkpoints, and the plain calls any failure falls back to (exactly as with the compiled
graph: the coordinator drops the sockets and runs the step again as calls; a leaf that
finished the step answers from its stored output). A leaf and its coordinator must share a
node (a leaf elsewhere makes the round use the compiled graph instead). On Linux the sockets
are abstract (no file is left behind when Ray kills a process) and a leaf answers only
connections from its own user's processes (the peer's credentials, ``SO_PEERCRED``);
elsewhere they are files in a directory only this user can open. Requests are msgpack (a
step number, the window, bytes: about 10x cheaper to write and read than pickle, which
rebuilt the window through its ``__reduce__``); replies are pickled: only this user's
processes can connect, and they could already read each other's memory.

A round is read in two parts (``start``): the agents' answers, which the coordinator's stage
needs, and then, after that stage, the venues' reports (delivered from the next window on).
While the round is out the coordinator does the work that needs none of its answers
(``busy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import platform
import select
import socket
import struct
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from actors.fanout import VenueAnswers, await_round, no_work
from actors.stepper import Stepper
from sapphire.kernel.timing import Window

log = logging.getLogger(__name__)

POLL_MS = 200  # how often an idle server checks that it should still serve
FAST_WAIT_MS = 50  # how long the coordinator waits for a round inside its event loop
FRAME_TIMEOUT_S = 30.0  # a frame whose length has arrived: the rest comes at once
_HEADER = struct.Struct("<Q")  # a frame: its payload's length, then the payload
_READ = 1 << 20
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_ABSTRACT = platform.system() == "Linux"  # Linux's abstract socket namespace
# a round's request: step, window, events, the venue's commands or an agent host's reports
# (one batch per hosted agent), barrier
Request = tuple[int, Window, bytes, bytes | list[bytes], bool]
_request_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(Request)


class OtherNode(RuntimeError):
    """A leaf runs on another node than the coordinator: no Unix socket reaches it."""


class LeafGone(ConnectionError):
    """A leaf's socket closed in the middle of a round (its process ended)."""


def _socket_dir() -> str:
    """A directory only this user can open (0700), for the round's socket files."""
    base = os.path.join(tempfile.gettempdir(), f"sapphire-rounds-{os.getuid()}")
    os.makedirs(base, mode=0o700, exist_ok=True)
    os.chmod(base, 0o700)  # the socket files inherit nothing looser from an old directory
    return base


def _endpoint() -> str:
    """A new socket address: abstract on Linux (nothing on disk to clean up), else a file."""
    name = f"sapphire-round-{os.getuid()}-{uuid.uuid4().hex}"
    if _ABSTRACT:
        return "\0" + name
    return os.path.join(_socket_dir(), f"{name}.sock")


def _peer_uid(conn: socket.socket) -> int | None:
    """The connected process's user id, where the OS says (Linux ``SO_PEERCRED``)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    _pid, uid, _gid = _CREDS.unpack(conn.getsockopt(socket.SOL_SOCKET, option, _CREDS.size))
    return int(uid)


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


def encode_request(request: Request) -> bytes:
    return _request_encoder.encode(request)


def decode_request(data: bytes) -> Request:
    return _request_decoder.decode(data)


def _read_frame(conn: socket.socket) -> bytes | None:
    """One frame's payload from the non-blocking ``conn``, which the server found readable;
    None where the peer closed first. A request (a window: a few kB) comes whole in one
    ``recv``; the rest of a larger one is waited for, up to FRAME_TIMEOUT_S. Not a blocking
    socket with a timeout: Python polls one before each ``recv`` and ``send``, and reading a
    request as header and payload and sending its answer took six system calls, now two."""
    chunks: list[bytes] = []
    got = 0
    need = _HEADER.size
    while got < need:
        try:
            chunk = conn.recv(_READ)
        except BlockingIOError:
            readable = select.poll()
            readable.register(conn, select.POLLIN)
            if not readable.poll(int(FRAME_TIMEOUT_S * 1000)):
                raise TimeoutError("a round request stopped half way") from None
            continue
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
        if need == _HEADER.size and got >= _HEADER.size:
            head = chunks[0] if len(chunks[0]) >= _HEADER.size else b"".join(chunks)
            need += _HEADER.unpack_from(head)[0]
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return data[_HEADER.size : need]


def _send_frame(conn: socket.socket, payload: bytes) -> None:
    """``payload`` framed, to the non-blocking ``conn`` (at once when its buffer has room)."""
    data = _frame(payload)
    try:
        sent = conn.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        _send_rest(conn, data[sent:], FRAME_TIMEOUT_S)


class RoundServer:
    """The leaf's side: a thread answering each request with ``handler(request)``. The
    handler runs under ``lock``, which the actor's own methods (plain calls, rewinds) take
    too, so a round and a call never step the actor at once. One coordinator is connected
    at a time: a new connection (a rebuilt round) replaces the old one."""

    def __init__(
        self, handler: Callable[[bytes], bytes], lock: threading.Lock, cpu: int | None = None
    ) -> None:
        self._handler = handler
        self._lock = lock
        self.cpu = cpu  # the CPU the serving thread runs on (None: wherever the OS puts it)
        self.endpoint = _endpoint()
        self._uid = os.getuid()  # whose processes may connect
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="round-server", daemon=True)
        self._thread.start()
        self._bound.wait(10.0)

    def _serve(self) -> None:
        if self.cpu is not None:
            try:  # this thread only: the actor's other threads stay where they are
                os.sched_setaffinity(0, {self.cpu})
            except (OSError, ValueError) as exc:  # a CPU this process may not use
                log.warning("round server: not pinned to CPU %s: %s", self.cpu, exc)
                self.cpu = None
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.endpoint)
        listener.listen(4)
        self._bound.set()
        conn: socket.socket | None = None
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        try:
            while not self._stop.is_set():
                for fd, _ in poller.poll(POLL_MS):
                    if fd == listener.fileno():
                        new, _ = listener.accept()
                        uid = _peer_uid(new)
                        if uid is not None and uid != self._uid:
                            log.warning("round server: refused a connection from uid %d", uid)
                            new.close()
                            break
                        if conn is not None:
                            poller.unregister(conn)
                            conn.close()
                        conn = new
                        conn.setblocking(False)  # read when poll says so (``_read_frame``)
                        poller.register(conn, select.POLLIN)
                        break  # the old connection's events are stale (its fd may be reused)
                    elif conn is not None and fd == conn.fileno() and not self._answer(conn):
                        poller.unregister(conn)
                        conn.close()
                        conn = None
        finally:
            if conn is not None:
                conn.close()
            listener.close()
            if not self.endpoint.startswith("\0"):
                with contextlib.suppress(OSError):
                    os.unlink(self.endpoint)

    def _answer(self, conn: socket.socket) -> bool:
        """Read one request, answer it; False where the connection is over."""
        try:
            request = _read_frame(conn)
        except OSError:
            return False
        if request is None:
            return False  # the coordinator closed its side
        try:
            with self._lock:
                reply = self._handler(request)
        except OSError as exc:
            # a full disk under a checkpoint, a store gone: the run's error, said once by the
            # coordinator (its fallback call raises it again); one line here, no traceback
            log.error("round request failed: %s: %s", type(exc).__name__, exc)
            reply = pickle.dumps(RoundError(f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # the coordinator falls back to calls, which say why
            log.exception("round request failed")
            reply = pickle.dumps(RoundError(f"{type(exc).__name__}: {exc}"))
        try:
            _send_frame(conn, reply)
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


class RoundLeaf:
    """What a leaf actor (the venue's, an agent host's) shares to serve rounds and be
    rewound: ``_lock``, ``_round`` and ``_stepper`` set in its ``__init__``, and ``_step``
    (one window, the caller holding ``_lock``) implemented."""

    _lock: threading.Lock
    _round: RoundServer | None
    _stepper: Stepper[Any]

    def _step(self, step: int, window: Window, events: bytes, data: Any, barrier: bool) -> Any:
        """One window's step (``data``: the venue's commands, an agent host's reports)."""
        raise NotImplementedError

    def rewind(self, step: int) -> int:
        """Back to barrier ``step`` (see ``actors.stepper``); returns the step it is at."""
        with self._lock:
            self._stepper.rewind(step)
            return self._stepper.last_step

    def _round_request(self, request: bytes) -> bytes:
        """A round's request, answered (the round server holds ``_lock``)."""
        step, window, events, data, barrier = decode_request(request)
        answer = self._step(step, window, events, data, barrier)
        return pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)

    def serve_round(self, cpu: int | None = None) -> tuple[str, str]:
        """Serve the coordinator's rounds on a socket (a new one; any old one stops), from a
        thread pinned to ``cpu`` when given: this actor's node and the socket's endpoint."""
        import ray

        self.stop_round()
        self._round = RoundServer(self._round_request, self._lock, cpu)
        return str(ray.get_runtime_context().get_node_id()), self._round.endpoint

    def stop_round(self) -> None:
        if self._round is not None:
            self._round.stop()
            self._round = None


class RoundError:
    """A leaf's step failed inside a round (sent back instead of an answer)."""

    def __init__(self, why: str) -> None:
        self.why = why


class _Reply:
    """One leaf's answer as it arrives: bytes read so far, the frame once whole."""

    __slots__ = ("buf", "payload")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.payload: bytes | None = None

    def feed(self, sock: socket.socket) -> None:
        """Read what ``sock`` (non-blocking) has; LeafGone where the leaf closed it."""
        while True:
            try:
                chunk = sock.recv(_READ)
            except BlockingIOError:
                break
            except OSError as exc:  # reset: it closed with our request unread
                raise LeafGone(f"a leaf's round socket failed: {exc}") from exc
            if not chunk:
                raise LeafGone("a leaf closed its round socket")
            self.buf += chunk
            if len(chunk) < _READ:
                break
        if len(self.buf) >= _HEADER.size:
            (n,) = _HEADER.unpack_from(self.buf)
            if len(self.buf) >= _HEADER.size + n:
                self.payload = bytes(self.buf[_HEADER.size : _HEADER.size + n])


class SocketFanout:
    """The coordinator's side: one connected socket per leaf (venues first, then agent
    actors), the same interface as ``actors.fanout.CompiledFanout``."""

    def __init__(
        self,
        sockets: list[socket.socket],
        leaves: list[str],
        venues: int,
        leaf_shard: dict[str, int],
        handles: list[Any],
    ) -> None:
        self._sockets = sockets
        self._by_fd = {sock.fileno(): i for i, sock in enumerate(sockets)}
        self._poller = select.poll()
        for sock in sockets:
            sock.setblocking(False)
            self._poller.register(sock, select.POLLIN)
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
        pin: bool = False,
    ) -> SocketFanout:
        """``pin``: each leaf's round thread on a CPU of its own (``ray.pin_leaves``)."""
        handles = [*venues, *(agents[leaf] for leaf in leaves)]
        cpus = leaf_cpus(len(handles)) if pin else [None] * len(handles)
        served = await asyncio.gather(
            *(h.serve_round.remote(cpu) for h, cpu in zip(handles, cpus, strict=True))
        )
        elsewhere = [i for i, (node, _) in enumerate(served) if node != node_id]
        if elsewhere:
            await asyncio.gather(*(handles[i].stop_round.remote() for i in range(len(handles))))
            raise OtherNode(f"{len(elsewhere)} leaf actor(s) on another node")
        sockets: list[socket.socket] = []
        try:
            for _, endpoint in served:
                sockets.append(_connect(endpoint))
        except OSError:
            for sock in sockets:
                sock.close()
            raise
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
        """The whole round: each venue's reports and each agent actor's answer."""
        venues, agents = await self.start(
            step, window, events, commands, barrier, reports, timeout_s, restarted
        )
        return await venues(), agents

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
        """As ``CompiledFanout.start``: each agent actor's answer, and the venues' reports to
        await; raises on any failure (TimeoutError past ``timeout_s``, LeafGone, OSError),
        the venues' when they are awaited."""
        n = self.venues
        requests: list[Request] = [
            (step, window, events[k], commands[k], barrier) for k in range(n)
        ]
        requests += [
            (step, window, events[self._leaf_shard[leaf]], reports[i], barrier)
            for i, leaf in enumerate(self.leaves)
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # the venues' requests first, though the step waits for their answers last: sending
        # the agents' first only moved ~14 us a step from the wait for the agents to the
        # wait for the venue (measured, RESULTS.md session 30)
        for sock, request in zip(self._sockets, requests, strict=True):
            data = _frame(encode_request(request))
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except (BrokenPipeError, ConnectionResetError) as exc:  # it closed already
                raise LeafGone(f"a leaf's round socket failed: {exc}") from exc
            if sent < len(data):
                # more than the socket buffer holds (a large window): the leaf reads it as
                # it comes; the rest is written off the event loop, within the round's time
                await asyncio.to_thread(_send_rest, sock, data[sent:], timeout_s)
        replies = [_Reply() for _ in self._sockets]
        busy()
        await self._wait(replies, range(n, len(replies)), deadline, restarted)
        agents = _answers(replies[n:])

        async def venues() -> list[bytes]:
            await self._wait(replies, range(n), deadline, restarted)
            return _answers(replies[:n])

        return venues, agents

    async def _wait(
        self,
        replies: list[_Reply],
        wanted: range,
        deadline: float,
        restarted: Callable[[], Awaitable[str]],
    ) -> None:
        """Until the ``wanted`` replies are whole (reading any other that arrives meanwhile);
        TimeoutError at ``deadline`` (the event loop's clock)."""

        def collect(timeout_ms: int) -> int:
            """Take what arrives within ``timeout_ms``; how many wanted answers are missing."""
            for fd, _ in self._poller.poll(timeout_ms):
                reply = replies[self._by_fd[fd]]
                if reply.payload is None:
                    reply.feed(self._sockets[self._by_fd[fd]])
            return sum(replies[i].payload is None for i in wanted)

        # A round answers in about a millisecond: wait for it right here, in the event loop,
        # for up to FAST_WAIT_MS (asyncio's machinery per answer cost ~6 % of the
        # coordinator, py-spy). A slower round (a busy machine, a hung or restarted leaf)
        # is waited for off the loop, as every transport waits (``await_round``).
        loop = asyncio.get_running_loop()
        fast_end = min(loop.time() + FAST_WAIT_MS / 1000, deadline)
        missing = sum(replies[i].payload is None for i in wanted)
        while missing and loop.time() < fast_end:
            missing = collect(max(1, int((fast_end - loop.time()) * 1000)))
        if missing:

            async def answered(wait_s: float) -> bool:
                return await asyncio.to_thread(collect, max(1, int(wait_s * 1000))) == 0

            await await_round(answered, deadline - loop.time(), restarted)

    async def close(self, timeout_s: float = 30.0) -> bool:
        """Close the sockets and ask the leaves to stop serving (best effort: a leaf that
        is gone or hung stops with its process). Always clean: a leaf serves a new round
        whenever asked, whatever an old one left."""
        for sock in self._sockets:
            sock.close()
        stops = [h.stop_round.remote() for h in self._handles]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*stops), timeout_s)
        return True


def _answers(replies: Sequence[_Reply]) -> list[Any]:
    """The leaves' answers; RuntimeError where a leaf's step failed in the round."""
    answers = [pickle.loads(r.payload) for r in replies if r.payload is not None]
    failed = [a for a in answers if isinstance(a, RoundError)]
    if failed:
        raise RuntimeError(f"a leaf's step failed in the round: {failed[0].why}")
    return answers


def leaf_cpus(n: int) -> list[int | None]:
    """A CPU for each of ``n`` leaves, round robin over those this process may use (the
    leaves share its node); None each where there is only one."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return [None] * n
    return [allowed[i % len(allowed)] for i in range(n)]


def _connect(endpoint: str) -> socket.socket:
    """A socket connected to a leaf's ``endpoint`` (it listens before serve_round returns)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(endpoint)
    except OSError:
        sock.close()
        raise
    return sock


def _send_rest(sock: socket.socket, data: bytes, timeout_s: float) -> None:
    """Write ``data`` to the non-blocking ``sock``, waiting for room up to ``timeout_s``."""
    view = memoryview(data)
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    while view:
        if not poller.poll(max(1, int(timeout_s * 1000))):
            raise TimeoutError("a leaf did not read its round request")
        try:
            k = sock.send(view)
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise LeafGone(f"a leaf's round socket failed: {exc}") from exc
        view = view[k:]
