"""The continuous-batching scheduler of the decision deployment, on a scripted engine: who
decodes with whom, when answers come back, what each is metered at (no model, no Ray)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from actors.serve.llm_deployment import DecodeScheduler
from sapphire.llm.engines import Generation
from sapphire.llm.llamacpp import Finished
from sapphire.llm.prompt import DecisionPrompt, SamplingConfig


def _prompt(tokens: int, name: str = "") -> DecisionPrompt:
    """A request the scripted engine answers with ``tokens`` tokens."""
    return DecisionPrompt(system="s", user=f"{tokens} {name}")


class ScriptedEngine:
    """The ``admit``/``step`` interface of :class:`LlamaCppEngine`: a sequence emits one
    token a step and ends after the count its prompt names. Each step waits for the test to
    release it, so the test decides what arrives between steps."""

    continuous = True
    model_id = "scripted"
    sampling = SamplingConfig()

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.seqs: list[dict[str, Any]] = []
        self.step_sizes: list[int] = []
        self.gate = threading.Semaphore(0)
        self.gated = False

    @property
    def active(self) -> int:
        return len(self.seqs)

    def admit(self, prompt: DecisionPrompt, tag: object) -> bool:
        if len(self.seqs) >= self.slots:
            return False
        n = int(prompt.user.split()[0])
        self.seqs.append({"tag": tag, "left": n, "n": n, "steps": 0, "sum": 0, "user": prompt.user})
        return True

    def cancel(self, tag: object) -> bool:
        before = len(self.seqs)
        self.seqs = [s for s in self.seqs if s["tag"] is not tag]
        return len(self.seqs) < before

    def abort(self) -> list[object]:
        tags = [s["tag"] for s in self.seqs]
        self.seqs = []
        return tags

    def step(self) -> list[Finished]:
        if self.gated:
            self.gate.acquire()
        size = len(self.seqs)
        self.step_sizes.append(size)
        done = []
        for s in list(self.seqs):
            s["left"] -= 1
            s["steps"] += 1
            s["sum"] += size
            if s["left"] == 0:
                self.seqs.remove(s)
                gen = Generation(text=s["user"], prompt_tokens=3, completion_tokens=s["n"])
                done.append(
                    Finished(
                        tag=s["tag"],
                        generation=gen,
                        steps=s["steps"],
                        mean_batch=s["sum"] / s["steps"],
                    )
                )
        return done


def test_a_short_answer_returns_before_the_long_one_it_was_batched_with() -> None:
    engine = ScriptedEngine(slots=8)
    sched = DecodeScheduler(engine, max_batch_size=8, batch_wait_timeout_s=0.05)

    async def go() -> list[tuple[str, dict[str, Any]]]:
        order: list[tuple[str, dict[str, Any]]] = []

        async def one(n: int, name: str) -> None:
            reply = await sched.submit(_prompt(n, name), 0)
            order.append((name, reply))

        await asyncio.gather(one(30, "long"), one(3, "short"), one(10, "mid"))
        return order

    order = asyncio.run(go())
    sched.close()
    assert [name for name, _ in order] == ["short", "mid", "long"]
    replies = dict(order)
    # all three arrived within the batch wait, so they shared the first steps
    assert engine.step_sizes[0] == 3
    assert replies["short"]["batch_size"] == 3 and replies["short"]["completion_tokens"] == 3
    # the long one decoded 3 steps with 3, 7 with 2, 20 alone: 3*3+7*2+20*1 over 30 steps
    assert abs(replies["long"]["batch_size_mean"] - 43 / 30) < 1e-9
    assert replies["long"]["batch_size"] == 1
    assert all(r["error"] == "" and r["queue_wait_ns"] >= 0 for _, r in order)
    assert all(r["cpu_s"] >= 0 and r["engine_ns"] > 0 for _, r in order)


def test_a_request_arriving_mid_decode_joins_at_the_next_step() -> None:
    engine = ScriptedEngine(slots=8)
    engine.gated = True
    sched = DecodeScheduler(engine, max_batch_size=8, batch_wait_timeout_s=0.0)

    async def go() -> dict[str, dict[str, Any]]:
        first = asyncio.ensure_future(sched.submit(_prompt(6, "first"), 0))
        await asyncio.sleep(0.05)
        engine.gate.release()  # step 1: first alone
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(sched.submit(_prompt(2, "second"), 0))
        await asyncio.sleep(0.05)
        for _ in range(10):
            engine.gate.release()
        a, b = await asyncio.gather(first, second)
        return {"first": a, "second": b}

    replies = asyncio.run(go())
    sched.close()
    # step 2 had started (waiting at the gate) when the second arrived: it joined the
    # running first one at step 3; nobody waited for a batch to end
    assert engine.step_sizes == [1, 1, 2, 2, 1, 1]
    assert replies["second"]["batch_size"] == 2
    assert replies["first"]["completion_tokens"] == 6


def test_max_batch_size_one_decodes_one_request_at_a_time() -> None:
    engine = ScriptedEngine(slots=8)
    sched = DecodeScheduler(engine, max_batch_size=1, batch_wait_timeout_s=0.0)

    async def go() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(sched.submit(_prompt(3), 0) for _ in range(4))))

    replies = asyncio.run(go())
    sched.close()
    assert set(engine.step_sizes) == {1} and len(engine.step_sizes) == 12
    assert [r["batch_size"] for r in replies] == [1, 1, 1, 1]
    # queued behind others: the later ones waited for a slot
    assert max(r["queue_wait_ns"] for r in replies) > 0


def test_a_cancelled_request_frees_its_slot() -> None:
    engine = ScriptedEngine(slots=1)
    engine.gated = True
    sched = DecodeScheduler(engine, max_batch_size=8, batch_wait_timeout_s=0.0)

    async def go() -> dict[str, Any]:
        stuck = asyncio.ensure_future(sched.submit(_prompt(1000, "stuck"), 0))
        await asyncio.sleep(0.05)
        nxt = asyncio.ensure_future(sched.submit(_prompt(2, "next"), 0))
        engine.gate.release()
        await asyncio.sleep(0.05)
        stuck.cancel()  # a client timeout
        for _ in range(5):
            engine.gate.release()
        return await asyncio.wait_for(nxt, 5)

    reply = asyncio.run(go())
    sched.close()
    assert reply["error"] == "" and reply["completion_tokens"] == 2
    assert engine.active == 0


def test_an_engine_failure_answers_every_sequence_with_the_error() -> None:
    engine = ScriptedEngine(slots=4)

    def broken() -> list[Finished]:
        raise RuntimeError("llama_decode returned 1")

    engine.step = broken  # type: ignore[method-assign]
    sched = DecodeScheduler(engine, max_batch_size=4, batch_wait_timeout_s=0.02)

    async def go() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(sched.submit(_prompt(3), 0) for _ in range(3))))

    replies = asyncio.run(go())
    sched.close()
    assert all(r["error"] == "engine error: RuntimeError: llama_decode returned 1" for r in replies)
    assert all(r["text"] == "" and "completion_tokens" not in r for r in replies)
    assert engine.active == 0


def test_an_engine_without_continuous_batching_gets_whole_batches() -> None:
    class Whole:
        model_id = "whole"
        sampling = SamplingConfig()

        def __init__(self) -> None:
            self.calls: list[int] = []

        def generate_batch(self, prompts: list[DecisionPrompt]) -> list[str]:
            return [g.text for g in self.generate_batch_detailed(prompts)]

        def generate_batch_detailed(self, prompts: list[DecisionPrompt]) -> list[Generation]:
            self.calls.append(len(prompts))
            return [Generation(text=p.user, completion_tokens=1) for p in prompts]

    engine = Whole()
    sched = DecodeScheduler(engine, max_batch_size=4, batch_wait_timeout_s=0.1)

    async def go() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(sched.submit(_prompt(1, str(i)), 0) for i in range(6))))

    replies = asyncio.run(go())
    sched.close()
    assert sorted(engine.calls, reverse=True) == [4, 2]
    assert [r["text"] for r in replies] == [f"1 {i}" for i in range(6)]
    assert sorted(r["batch_size"] for r in replies) == [2, 2, 4, 4, 4, 4]


class _WholeEngine:
    """vLLM / transformers / llama.cpp without ``parallel``: one call per batch; a prompt
    named ``bad`` fails whatever batch it is in."""

    model_id = "whole"
    sampling = SamplingConfig()

    def generate_batch_detailed(self, prompts: list[DecisionPrompt]) -> list[Generation]:
        if any(p.user == "bad" for p in prompts):
            raise RuntimeError("prompt may need 4000 KV cells, n_ctx is 512")
        return [Generation(text=p.user, prompt_tokens=3, completion_tokens=5) for p in prompts]


def test_a_failing_batch_answers_every_request_and_only_the_bad_one_fails() -> None:
    # the batch was cleared before the engine ran: a failure answered nobody (each caller
    # waited out its timeout, stored as one) and left the jobs to share later steps' costs
    async def main() -> list[dict[str, Any]]:
        sched = DecodeScheduler(_WholeEngine(), max_batch_size=4, batch_wait_timeout_s=0.2)
        users = ["a", "bad", "c"]
        tasks = [
            asyncio.ensure_future(sched.submit(DecisionPrompt(system="s", user=u), 0))
            for u in users
        ]
        replies = list(await asyncio.wait_for(asyncio.gather(*tasks), timeout=5))
        assert not sched._running  # nothing left behind to share a later step's costs
        sched.close()
        return replies

    replies = asyncio.run(main())
    assert [r["text"] for r in replies] == ["a", "", "c"]
    assert replies[1]["error"].startswith("engine error: RuntimeError: prompt may need")
    assert replies[0]["error"] == replies[2]["error"] == ""
