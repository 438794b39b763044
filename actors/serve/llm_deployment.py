"""The LLM decision deployment: one model per replica, requests continuously batched.

Dict in (a :class:`~sapphire.llm.prompt.DecisionPrompt` as builtins), dict out (raw text and
its metering: token counts, queue wait, batch size, engine time, CPU/GPU seconds and their
cost at the run's price table). The replica does not trust or parse the text for callers:
clients validate it with ``parse_decision``.

Why not ``@serve.batch``: it hands the engine a batch and answers when the whole batch is
done, so every request waits for the batch's longest answer, a finished sequence's slot
idles until then, and requests arriving meanwhile wait for the next batch. Here each request
goes to a :class:`DecodeScheduler`, a thread that runs the engine's decode loop: a request
takes a free slot at the next token boundary (up to ``max_batch_size`` decode together) and
is answered as soon as its own sequence ends. The replica's event loop only enqueues and
awaits futures, so it keeps answering health checks and reporting load to the autoscaler.
``max_batch_size: 1`` decodes one request at a time: the unbatched baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from decimal import Decimal
from typing import Any

import msgspec
from ray import serve
from starlette.requests import Request

from actors.cost import HOUR, Prices
from sapphire.llm.engines import (
    Generation,
    TextEngine,
    create_engine,
    engine_config_from_dict,
    engine_fingerprint,
)
from sapphire.llm.prompt import DecisionPrompt

MAX_PROMPT_CHARS = 4000
DECISION_COST_PRECISION = Decimal("0.000000001")
"""A 135M-model decision costs millionths of a dollar: the run table's micro-unit rounding
would store most as zero. Nine places is what the stored money columns keep."""


def _validate(request: object) -> DecisionPrompt | str:
    try:
        prompt = msgspec.convert(request, DecisionPrompt)
    except msgspec.ValidationError as exc:
        return f"bad request: {exc}"
    if len(prompt.system) + len(prompt.user) > MAX_PROMPT_CHARS:
        return f"bad request: prompt longer than {MAX_PROMPT_CHARS} chars"
    return prompt


class _Job:
    """One request inside the scheduler: its future and the metering gathered for it."""

    __slots__ = (
        "admitted_ns",
        "arrived_ns",
        "cpu_s",
        "future",
        "loop",
        "prompt",
        "wall_s",
    )

    def __init__(
        self,
        prompt: DecisionPrompt,
        arrived_ns: int,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[dict[str, Any]],
    ) -> None:
        self.prompt, self.arrived_ns, self.loop, self.future = prompt, arrived_ns, loop, future
        self.admitted_ns = 0
        self.cpu_s = 0.0  # its share of the process CPU time of each step it was in
        self.wall_s = 0.0  # likewise of wall time (GPU seconds when the replica has a GPU)


class _WholeBatches:
    """``admit``/``step`` for an engine without continuous batching (vLLM, transformers, the
    llama.cpp sequential path): the admitted prompts are generated together by one
    ``generate_batch_detailed`` call, and only then does the next batch start."""

    def __init__(self, engine: TextEngine, slots: int) -> None:
        self._engine = engine
        self.slots = slots
        self._batch: list[tuple[DecisionPrompt, object]] = []

    @property
    def active(self) -> int:
        return len(self._batch)

    def admit(self, prompt: DecisionPrompt, tag: object) -> bool:
        if len(self._batch) >= self.slots:
            return False
        self._batch.append((prompt, tag))
        return True

    def cancel(self, tag: object) -> bool:
        before = len(self._batch)
        self._batch = [(p, t) for p, t in self._batch if t is not tag]
        return len(self._batch) < before

    def abort(self) -> list[object]:
        tags = [t for _, t in self._batch]
        self._batch = []
        return tags

    def step(self) -> list[tuple[object, Generation | Exception, float]]:
        # the batch stays until the engine answered: cleared first, a failure left every
        # request of it unanswered (its caller waited out its timeout, stored as one)
        batch = self._batch
        try:
            gens = self._engine.generate_batch_detailed([p for p, _ in batch])
        except Exception:
            if len(batch) == 1:
                raise  # the scheduler answers it with the engine's error
            # one prompt that cannot fit took the batch's valid requests down with it: each
            # alone, so only those that fail are answered with their error
            self._batch = []
            alone: list[tuple[object, Generation | Exception, float]] = []
            for prompt, tag in batch:
                try:
                    alone.append((tag, self._engine.generate_batch_detailed([prompt])[0], 1.0))
                except Exception as exc:
                    alone.append((tag, exc, 1.0))
            return alone
        self._batch = []
        return [(t, g, float(len(batch))) for (_, t), g in zip(batch, gens, strict=True)]


class DecodeScheduler:
    """A thread running the engine's decode loop over requests submitted from any event loop.

    Each :meth:`step` of the engine decodes one token for every sequence in a slot and
    prefills those admitted just before it; between steps, queued requests take the free
    slots (at most ``max_batch_size`` sequences in all) and finished ones are answered
    (their futures resolved thread-safely on the caller's loop). When the engine is idle, the
    first request waits up to ``batch_wait_timeout_s`` for others to share its first step;
    once decoding, newcomers join at the next token boundary without waiting.

    Metering, per request: ``queue_wait_ns`` from arrival at the replica to its admission
    into a slot; ``engine_ns`` from admission to its answer; ``batch_size`` the number of
    sequences in the forward passes it took part in, **averaged over its life** (its
    prefill included) and rounded, ``batch_size_mean`` unrounded; ``cpu_s`` its share of
    the process CPU time of each of those steps (each step's time split evenly among the
    sequences in it); ``gpu_s`` likewise of wall time, times the replica's GPUs.
    """

    def __init__(self, engine: Any, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self.engine = engine
        if getattr(engine, "continuous", False):
            self._slots: Any = engine
            self._slot_cap = int(engine.slots)
        else:
            self._slots = _WholeBatches(engine, max(1, max_batch_size))
            self._slot_cap = 256
        self.max_batch_size = max(1, max_batch_size)
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.steps = 0
        self._queue: deque[_Job] = deque()
        self._running: dict[int, _Job] = {}  # id(job) -> job, for jobs in a slot
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="llm-decode", daemon=True)
        self._thread.start()

    def configure(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        with self._cond:
            self.max_batch_size = max(1, max_batch_size)
            self.batch_wait_timeout_s = batch_wait_timeout_s
            if isinstance(self._slots, _WholeBatches):
                self._slots.slots = self.max_batch_size
            self._cond.notify()

    @property
    def cap(self) -> int:
        """Sequences decoded together at most: ``max_batch_size`` within the engine's slots."""
        return min(self.max_batch_size, self._slot_cap)

    async def submit(self, prompt: DecisionPrompt, arrived_ns: int) -> dict[str, Any]:
        """The engine's answer to ``prompt`` with its metering (``error`` set on failure)."""
        loop = asyncio.get_running_loop()
        job = _Job(prompt, arrived_ns, loop, loop.create_future())
        with self._cond:
            self._queue.append(job)
            self._cond.notify()
        # Cancelled (the caller timed out): the loop drops the job from the queue or its slot.
        return await job.future

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()

    # -- the decode thread ----------------------------------------------------------------
    def _admit(self) -> None:
        """Queued jobs into free slots (under the lock); cancelled ones leave."""
        slots = self._slots
        while self._queue and slots.active < self.cap:
            job = self._queue[0]
            if job.future.cancelled():
                self._queue.popleft()
                continue
            try:
                if not slots.admit(job.prompt, job):
                    return  # no KV room now: it waits for a sequence to finish
            except Exception as exc:  # a prompt that can never fit: answered, not fatal
                self._queue.popleft()
                self._answer(job, None, f"engine error: {type(exc).__name__}: {exc}")
                continue
            self._queue.popleft()
            job.admitted_ns = time.monotonic_ns()
            self._running[id(job)] = job

    def _loop(self) -> None:
        slots = self._slots
        while True:
            with self._cond:
                while not self._stop and not self._queue and not slots.active:
                    self._cond.wait()
                if self._stop:
                    break
                if not slots.active and self.batch_wait_timeout_s > 0:
                    deadline = time.monotonic() + self.batch_wait_timeout_s
                    while len(self._queue) < self.cap and not self._stop:
                        left = deadline - time.monotonic()
                        if left <= 0 or not self._cond.wait(left):
                            break
                self._admit()
            for job in list(self._running.values()):
                if job.future.cancelled():
                    slots.cancel(job)
                    del self._running[id(job)]
            if not slots.active:
                continue
            members = list(self._running.values())
            cpu0, t0 = time.process_time(), time.perf_counter()
            try:
                finished = self._step()
            except Exception as exc:  # an engine failure answers its sequences, never kills
                error = f"engine error: {type(exc).__name__}: {exc}"
                for tag in slots.abort():
                    if isinstance(tag, _Job) and id(tag) in self._running:
                        del self._running[id(tag)]
                        self._answer(tag, None, error)
                continue
            # Why process CPU time: llama.cpp decodes on its own threads, which a thread
            # clock misses; this process serves nothing else.
            share = max(1, len(members))
            cpu_s = (time.process_time() - cpu0) / share
            wall_s = (time.perf_counter() - t0) / share
            for job in members:
                job.cpu_s += cpu_s
                job.wall_s += wall_s
            self.steps += 1
            for tag, gen, mean_batch in finished:
                if isinstance(tag, _Job) and id(tag) in self._running:
                    del self._running[id(tag)]
                    if isinstance(gen, Exception):
                        self._answer(tag, None, f"engine error: {type(gen).__name__}: {gen}")
                    else:
                        self._answer(tag, gen, "", mean_batch)

    def _step(self) -> list[tuple[object, Generation | Exception, float]]:
        slots = self._slots
        if isinstance(slots, _WholeBatches):
            return slots.step()
        return [(f.tag, f.generation, f.mean_batch) for f in slots.step()]

    def _answer(
        self, job: _Job, gen: Generation | None, error: str, mean_batch: float = 0.0
    ) -> None:
        now = time.monotonic_ns()
        admitted = job.admitted_ns or now
        reply: dict[str, Any] = {
            "text": gen.text if gen is not None else "",
            "error": error,
            "batch_size": max(1, round(mean_batch)) if gen is not None else 0,
            "batch_size_mean": mean_batch,
            "queue_wait_ns": max(0, admitted - job.arrived_ns),
            "engine_ns": now - admitted,
            "cpu_s": job.cpu_s,
            "wall_s": job.wall_s,
        }
        if gen is not None:
            reply["prompt_tokens"] = gen.prompt_tokens
            reply["completion_tokens"] = gen.completion_tokens
        # RuntimeError: the caller's event loop is closed, nobody is waiting for this
        with contextlib.suppress(RuntimeError):
            job.loop.call_soon_threadsafe(_resolve, job.future, reply)


def _resolve(future: asyncio.Future[dict[str, Any]], reply: dict[str, Any]) -> None:
    if not future.done():
        future.set_result(reply)


@serve.deployment(max_ongoing_requests=16, ray_actor_options={"num_cpus": 1})
class LlmDecisionDeployment:
    def __init__(
        self,
        engine: dict[str, Any] | None = None,
        max_batch_size: int = 8,
        batch_wait_timeout_s: float = 0.02,
        point_in_time: str = "warn",
        prices: dict[str, Any] | None = None,
    ) -> None:
        config = engine_config_from_dict(dict(engine or {}))
        self._engine = create_engine(config)
        self._cutoff = config.knowledge_cutoff
        self._fingerprint = engine_fingerprint(config)
        self._point_in_time = point_in_time
        prices = dict(prices or {})
        self._currency = str(prices.pop("currency", ""))
        self._prices = msgspec.convert(prices or {"cpu_hour": "0"}, Prices, strict=False)
        import ray

        assigned = ray.get_runtime_context().get_assigned_resources()  # type: ignore[no-untyped-call]
        self._gpus = float(assigned.get("GPU", 0.0))
        self._scheduler = DecodeScheduler(self._engine, max_batch_size, batch_wait_timeout_s)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        s = self._scheduler
        s.configure(
            int(user_config.get("max_batch_size", s.max_batch_size)),
            float(user_config.get("batch_wait_timeout_s", s.batch_wait_timeout_s)),
        )

    def __del__(self) -> None:
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is not None:
            scheduler.close()

    async def generate(self, request: Any, arrived_ns: int) -> dict[str, Any]:
        checked = _validate(request)
        if isinstance(checked, str):
            return {"text": "", "error": checked, "batch_size": 0, "queue_wait_ns": 0}
        reply = await self._scheduler.submit(checked, arrived_ns)
        cpu_s = float(reply.pop("cpu_s"))
        gpu_s = self._gpus * float(reply.pop("wall_s"))
        cost = (
            Decimal(repr(cpu_s)) / HOUR * self._prices.cpu_hour
            + Decimal(repr(gpu_s)) / HOUR * self._prices.gpu_hour
        ).quantize(DECISION_COST_PRECISION)
        reply.update(cpu_s=cpu_s, gpu_s=gpu_s, cost=str(cost), cost_currency=self._currency)
        if not reply["error"]:
            reply["model"] = self._engine.model_id
        return reply

    def describe(self) -> dict[str, Any]:
        """What a client needs for its cache key."""
        return {
            "model": self._engine.model_id,
            "sampling": msgspec.to_builtins(self._engine.sampling),
            "engine": self._fingerprint,
            "decode_steps": self._scheduler.steps,
            "max_batch_size": self._scheduler.cap,
            "knowledge_cutoff": self._cutoff,
            "point_in_time": self._point_in_time,
            "cost_currency": self._currency,
        }

    async def __call__(self, request: Request | dict[str, Any]) -> dict[str, Any]:
        arrived_ns = time.monotonic_ns()
        if isinstance(request, Request):
            try:
                body = await request.json()
            except ValueError:
                return {"text": "", "error": "bad request: body is not JSON"}
        else:
            body = request
        return await self.generate(body, arrived_ns)
