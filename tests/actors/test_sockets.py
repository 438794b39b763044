"""The sockets round transport's own contract, without Ray: frames of any size arrive whole,
a leaf's death or failure ends the round at once with the reason, and a rebuilt round
(a new connection) replaces the old one on the same leaf."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from actors.sockets import LeafGone, RoundServer, SocketFanout, _connect, decode_request
from sapphire.kernel.timing import Window

WINDOW = Window(step=0, start_ns=0, end_ns=10)


async def _nobody() -> str:
    return ""


def _echo(request: bytes) -> bytes:
    """Answers with the request's events and commands (each leaf's answer names its input)."""
    _step, _window, events, commands, _barrier = decode_request(request)
    return pickle.dumps((events, commands))


def _fanout(servers: list[RoundServer], venues: int = 1) -> SocketFanout:
    leaves = [f"leaf{i}" for i in range(len(servers) - venues)]
    return SocketFanout(
        [_connect(s.endpoint) for s in servers],
        leaves,
        venues,
        dict.fromkeys(leaves, 0),
        [],
    )


def _round(fanout: SocketFanout, events: bytes, timeout_s: float = 5.0) -> Any:
    agents = len(fanout.leaves)
    return asyncio.run(
        fanout.run(0, WINDOW, [events], [b"cmds"], False, [[b"r"]] * agents, timeout_s, _nobody)
    )


@pytest.fixture
def servers() -> Any:
    made: list[RoundServer] = []

    def make(handler: Callable[[bytes], bytes] = _echo) -> RoundServer:
        server = RoundServer(handler, threading.Lock())
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def test_a_round_larger_than_the_socket_buffers_arrives_whole(servers: Any) -> None:
    big = bytes(range(256)) * 40_000  # 10 MB: many times a Unix socket's buffer
    fanout = _fanout([servers(), servers()])
    venue, agents = _round(fanout, big)
    assert venue == [(big, b"cmds")]
    assert agents == [(big, [b"r"])]
    venue, agents = _round(fanout, b"small")  # the stream stays framed after a large one
    assert venue == [(b"small", b"cmds")]
    asyncio.run(fanout.close())


def test_a_failing_leaf_step_ends_the_round_with_its_reason(servers: Any) -> None:
    def fail(request: bytes) -> bytes:
        raise ValueError("the venue refused the window")

    fanout = _fanout([servers(fail), servers()])
    with pytest.raises(RuntimeError, match="ValueError: the venue refused the window"):
        _round(fanout, b"e")


def test_a_leaf_that_goes_away_ends_the_round_at_once(servers: Any, tmp_path: Any) -> None:
    path = str(tmp_path / "leaf.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def die() -> None:  # reads its request, then its process ends without an answer
        conn, _ = listener.accept()
        conn.recv(16)
        time.sleep(0.2)
        conn.close()

    thread = threading.Thread(target=die)
    thread.start()
    leaves = ["agent"]
    fanout = SocketFanout(
        [_connect(servers().endpoint), _connect(path)], leaves, 1, {"agent": 0}, []
    )
    started = time.monotonic()
    with pytest.raises(LeafGone):
        _round(fanout, b"e", timeout_s=60.0)
    # well before the round's 60 s timeout: the closed socket says so
    assert time.monotonic() - started < 5.0
    thread.join()
    listener.close()


def test_a_rebuilt_round_replaces_the_old_connection(servers: Any) -> None:
    server = servers()
    first = _fanout([server])
    assert _round(first, b"one")[0] == [(b"one", b"cmds")]
    second = _fanout([server])  # the coordinator rebuilt its round (after a failure)
    assert _round(second, b"two")[0] == [(b"two", b"cmds")]
    assert _round(second, b"three")[0] == [(b"three", b"cmds")]
    asyncio.run(first.close())
    asyncio.run(second.close())


def test_a_pinned_leaf_serves_from_its_cpu(servers: Any) -> None:
    from actors.sockets import leaf_cpus

    allowed = sorted(os.sched_getaffinity(0))
    cpus = leaf_cpus(3)
    if len(allowed) < 2:
        assert cpus == [None, None, None]
        pytest.skip("one CPU: nothing to pin to")
    assert cpus == [allowed[i % len(allowed)] for i in range(3)]

    def where(request: bytes) -> bytes:  # the serving thread's own CPUs
        return pickle.dumps(sorted(os.sched_getaffinity(0)))

    pinned = RoundServer(where, threading.Lock(), cpu=allowed[-1])
    free = servers(where)
    try:
        fanout = _fanout([pinned, free])
        venue, agents = _round(fanout, b"e")
        assert venue == [[allowed[-1]]]
        assert agents == [allowed]  # unpinned: every CPU the process may use
        assert sorted(os.sched_getaffinity(0)) == allowed  # the caller's thread unchanged
    finally:
        pinned.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket features")
def test_leaves_leave_no_file_and_answer_only_their_own_user(servers: Any) -> None:
    server = servers()
    assert server.endpoint.startswith("\0")  # abstract: nothing on disk when it dies
    assert _round(_fanout([server]), b"mine")[0] == [(b"mine", b"cmds")]

    stranger = servers()
    stranger._uid = os.getuid() + 1  # as if this test ran as another user
    started = time.monotonic()
    with pytest.raises(LeafGone):
        _round(_fanout([stranger]), b"theirs", timeout_s=60.0)
    assert time.monotonic() - started < 5.0  # refused at once, not timed out


def test_the_agents_answers_come_back_before_the_venues(servers: Any) -> None:
    """``start`` returns once the agents have answered: the coordinator runs its stage
    while the venue still works, and reads the venue's reports after it."""
    venue_may_answer = threading.Event()
    busy_ran = threading.Event()

    def venue(request: bytes) -> bytes:
        assert venue_may_answer.wait(10)
        return _echo(request)

    def agent(request: bytes) -> bytes:
        # the coordinator's own work runs while the round is out, before any answer is read
        return pickle.dumps((busy_ran.wait(10), decode_request(request)[3]))

    fanout = _fanout([servers(venue), servers(agent)])

    async def round_() -> tuple[Any, Any]:
        venues, agents = await fanout.start(
            0, WINDOW, [b"e"], [b"cmds"], False, [[b"r"]], 10.0, _nobody, busy=busy_ran.set
        )
        venue_may_answer.set()  # the venue has not answered: it was waiting for this
        return await venues(), agents

    venue_answer, agents = asyncio.run(round_())
    assert agents == [(True, [b"r"])]
    assert venue_answer == [(b"e", b"cmds")]
    asyncio.run(fanout.close())
