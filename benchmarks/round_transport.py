"""One round of the sockets transport between two processes: the product's ``SocketFanout``
(the coordinator's side) and ``RoundServer`` (a leaf's side, here answering with its input)
against the same request and reply through ZeroMQ REQ/REP over ``ipc://`` (the transport's
first version), measured in one run.

    .venv/bin/python benchmarks/round_transport.py [--rounds 5000] [--bytes 2000] [--repeat 4]

The ZeroMQ baseline needs pyzmq (not a Sapphire dependency: ``pip install pyzmq``); without
it only the product's figure is printed. Prints p50/p95/mean microseconds per round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import pickle
import statistics
import tempfile
import threading
import time
from typing import Any

from actors.sockets import RoundServer, SocketFanout, _connect
from sapphire.kernel.timing import Window


def _echo(request: bytes) -> bytes:
    _step, _window, events, _commands, _barrier = pickle.loads(request)
    return pickle.dumps(events)


def _leaf(endpoints: Any) -> None:
    server = RoundServer(_echo, threading.Lock())
    endpoints.put(server.endpoint)
    time.sleep(3600)


def _zmq_leaf(endpoint: str, rounds: int) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.REP)
    sock.bind(endpoint)
    for _ in range(rounds):
        sock.send(_echo(sock.recv()))


def _product(rounds: int, payload: bytes) -> list[float]:
    endpoints: Any = mp.get_context("spawn").Queue()
    leaf = mp.get_context("spawn").Process(target=_leaf, args=(endpoints,), daemon=True)
    leaf.start()
    try:
        fanout = SocketFanout([_connect(endpoints.get(timeout=30))], [], 1, {}, [])
        window = Window(step=0, start_ns=0, end_ns=1)

        async def nobody() -> str:
            return ""

        async def many() -> list[float]:
            out = []
            for step in range(rounds):
                t = time.perf_counter()
                await fanout.run(step, window, [payload], [b""], False, [], 10.0, nobody)
                out.append(time.perf_counter() - t)
            return out

        return asyncio.run(many())
    finally:
        leaf.kill()


def _zmq(rounds: int, payload: bytes) -> list[float] | None:
    try:
        import zmq
    except ImportError:
        return None
    endpoint = f"ipc://{tempfile.gettempdir()}/round-bench-{os.getpid()}.sock"
    leaf = mp.get_context("spawn").Process(target=_zmq_leaf, args=(endpoint, rounds))
    leaf.start()
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.connect(endpoint)
    request = (0, Window(step=0, start_ns=0, end_ns=1), payload, b"", False)
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        sock.send(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
        pickle.loads(sock.recv())
        out.append(time.perf_counter() - t)
    leaf.join()
    sock.close(0)
    return out


def _line(name: str, seconds: list[float]) -> str:
    us = sorted(s * 1e6 for s in seconds)
    p95 = us[int(0.95 * len(us))]
    return (
        f"{name:<38} p50 {us[len(us) // 2]:7.1f} us  p95 {p95:7.1f} us  "
        f"mean {statistics.mean(us):7.1f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--bytes", type=int, default=2000, help="a window's encoded events")
    parser.add_argument("--repeat", type=int, default=4, help="alternated runs of each")
    args = parser.parse_args()
    payload = os.urandom(args.bytes)
    print(f"load average before: {os.getloadavg()}; cores: {os.cpu_count()}")
    for _ in range(args.repeat):  # alternated: wake-ups depend on which cores the two get
        print(_line("sockets transport (actors.sockets)", _product(args.rounds, payload)))
        zmq = _zmq(args.rounds, payload)
        print(_line("ZeroMQ REQ/REP over ipc (baseline)", zmq) if zmq else "pyzmq: not installed")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
