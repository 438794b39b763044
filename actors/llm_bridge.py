"""Asks the LLM deployment on Ray Serve for an agent's decisions without blocking its ticks.

Requests go out on a background event loop; answers wait in an inbox until the agent actor's
next step hands them to the agent (``on_decision``), which acts on them at later events. The
coordinator's risk checks bind whatever the model says.

Every decision becomes one stored row with its metering (tokens, queue wait, batch size,
latency, cache hit, CPU/GPU seconds and their cost) and, when the model's answer was not
used, the reason and the fallback rule that decided instead; the same figures go to
Prometheus (``actors.metrics``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import msgspec

from actors import metrics
from actors.cache import redis_level
from sapphire.adapters.redis_cache import RedisCache
from sapphire.cli import one_line
from sapphire.config.redis import RedisConfig
from sapphire.llm.prompt import DecisionPrompt
from sapphire.storage.records import LlmDecisionRecord
from sapphire.storage.tiered import TieredCache

# A model call takes seconds: Redis may take far longer than the hot path's 50 ms before
# asking the model again is the cheaper choice. Measured on 2 cores at load 7-8
# (benchmarks/cache_hit_rate.py --only llm): with 50 ms, 8 of 15 warm lookups timed out and
# went to the model, and a lease's waiters took a timeout for "Redis down".
REDIS_TIMEOUT_S = 0.5


class LlmBridge:
    def __init__(self, app_name: str, timeout_s: float, redis: RedisConfig | None = None) -> None:
        self._app_name = app_name
        self._timeout_s = timeout_s
        self._redis = redis
        self._client: Any = None
        self.l2: RedisCache | None = None
        self._l2_made = False
        self._inbox: list[tuple[Any, Any]] = []
        # the prompt of each request sent and not yet answered nor timed out: the agent's
        # timeout row names its prompt's cache key too
        self._prompts: dict[int, DecisionPrompt] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llm", daemon=True)
        self._thread.start()
        # counted from the stored rows, so the summary says what the table holds: a request
        # the agent timed out in event time is one "timeout" row (its answer, if it came,
        # one "late" row more); the client's own counts missed those timeouts
        self._flags = {
            "before_cutoff": 0,
            "refused": 0,
            "fallbacks": 0,
            "stored": 0,
            "in_time": 0,
            "timeouts": 0,
            "late": 0,
            "stale": 0,
            "unused": 0,
        }
        self._raised = 0  # requests the client raised on (their records carry the error)
        self._ended = False  # the run's end rows were counted (end_records)

    def submit(self, requests: list[Any]) -> None:
        with self._lock:
            for request in requests:
                self._prompts[request.request_id] = request.prompt
        for request in requests:
            asyncio.run_coroutine_threadsafe(self._ask(request), self._loop)

    def _make_client(self) -> Any:
        from actors.serve.llm_client import ServeDecisionClient

        if self._client is None:
            if not self._l2_made:
                # decisions shared by every agent actor, and kept across their restarts; an
                # unreachable Redis only costs the L2 tier (counted, never raised)
                self.l2 = redis_level(
                    self._redis, f"llm:{self._app_name}:", min_socket_timeout_s=REDIS_TIMEOUT_S
                )
                self._l2_made = True
            # raises when there is no Serve app to ask (none running, not deployed yet): the
            # next request tries again
            self._client = ServeDecisionClient(
                app_name=self._app_name, timeout_s=self._timeout_s, redis=self.l2
            )
        return self._client

    async def _ask(self, request: Any) -> None:
        try:
            # built inside the try: a client that could not be built (no Serve instance)
            # raised into a future nobody reads, the request was never answered and stored
            # later as an event-time timeout, its cause lost
            client = self._make_client()
            answer = await client.decide_detailed(request.prompt, request.ts_event_ns)
        except Exception as exc:  # anything the client raised is this decision's error: a
            # request whose task died was stored as a timeout, its cause lost
            from actors.serve.llm_client import Answer
            from sapphire.llm.decision import HOLD

            answer = Answer(decision=HOLD, error=_error_line(exc))
            self._raised += 1
        with self._lock:
            self._inbox.append((request, answer))

    def _prompt_hash(self, request_id: int, known: str = "") -> str:
        """The cache key of a sent request's prompt (``known``: the one its answer named),
        forgotten once its row is made."""
        with self._lock:
            prompt = self._prompts.pop(request_id, None)
        if known or prompt is None or self._client is None:
            return known
        from actors.serve.llm_client import prompt_key

        return prompt_key(self._client._identity, prompt)

    def collect(self, agent: Any, symbol: str, now_ns: int) -> list[LlmDecisionRecord]:
        """Hand arrived answers to the agent; the records of every decision, for storage:
        the model's answers (used, dropped stale, invalid or late) and the agent's own
        fallbacks (event-time timeouts, requests refused for future data).

        A model answer the agent takes is stored once its fate is known: the agent hands
        its record back (``drain_outcomes``) when it acts on it, or drops it because the
        symbol's next event came after the deadline (stored not valid, ``stale``)."""
        with self._lock:
            arrived, self._inbox = self._inbox, []
        fallback_rule = str(getattr(getattr(agent, "config", None), "fallback", ""))
        records = []
        for request, answer in arrived:
            record = LlmDecisionRecord(
                ts_event_ns=request.ts_event_ns,
                agent_id=request.agent_id,
                symbol=symbol,
                model=answer.model or self._app_name,
                action=answer.decision.action,
                size_fraction=answer.decision.size_fraction,
                confidence=answer.decision.confidence,
                rationale=answer.decision.rationale,
                valid=not answer.error,
                latency_ns=answer.latency_ns,
                error=answer.error,
                prompt_hash=self._prompt_hash(request.request_id, answer.prompt_hash),
                before_cutoff=answer.before_cutoff,
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=answer.completion_tokens,
                queue_wait_ns=answer.queue_wait_ns,
                batch_size=answer.batch_size,
                cache_hit=answer.cache_hit,
                cpu_s=answer.cpu_s,
                gpu_s=answer.gpu_s,
                cost=answer.cost,
                cost_currency=answer.cost_currency,
            )
            note = b"" if answer.error else msgspec.msgpack.encode(record)
            acted = agent.on_decision(
                request.request_id, answer.decision, now_ns, answer.error, note=note
            )
            if acted is None:
                # after the request's deadline: the agent already acted (its fallback, on an
                # event-time timeout stored as that). The answer's own failure, if any, is
                # kept after the label: a wall-clock timeout answering late was a second
                # "timeout" row for one request, and no late one.
                late = "late: answered after the request's event-time deadline"
                error = f"{late} ({answer.error})" if answer.error else late
                records.append(msgspec.structs.replace(record, valid=False, error=error))
            elif answer.error:
                records.append(
                    msgspec.structs.replace(
                        record,
                        fallback=fallback_rule,
                        action=acted.action,
                        size_fraction=acted.size_fraction,
                        confidence=acted.confidence,
                        rationale=acted.rationale,
                    )
                )
            # else: taken in time, stored when the agent acts on it or drops it (outcomes)
        records += self.outcomes(agent, symbol)
        for record in records:
            self._count(record)
        return records

    def outcomes(self, agent: Any, symbol: str) -> list[LlmDecisionRecord]:
        """The records of what the agent did with its decisions since it was last asked:
        a model answer it acted on or dropped, its own fallbacks. Asked after each step
        too: the ones of a run's last step were never stored (counted by the caller's
        ``collect``, or by :meth:`take_outcomes`)."""
        outcomes: list[Any] = getattr(agent, "drain_outcomes", list)()
        return [self._record(agent, symbol, outcome) for outcome in outcomes]

    def _record(self, agent: Any, symbol: str, outcome: Any) -> LlmDecisionRecord:
        if outcome.note:
            row = msgspec.msgpack.decode(outcome.note, type=LlmDecisionRecord)
            if outcome.error:
                # dropped: nothing traded on it, and no fallback decided instead
                row = msgspec.structs.replace(row, valid=False, error=outcome.error)
            return row
        return LlmDecisionRecord(
            ts_event_ns=outcome.ts_event_ns,
            agent_id=getattr(agent, "agent_id", ""),
            symbol=symbol,
            model=self._app_name,
            action=outcome.decision.action,
            size_fraction=outcome.decision.size_fraction,
            confidence=outcome.decision.confidence,
            rationale=outcome.decision.rationale,
            valid=False,
            latency_ns=0,
            error=outcome.error,
            fallback=outcome.fallback,
            prompt_hash=self._prompt_hash(outcome.request_id),
        )

    def end_records(self, agent: Any, symbol: str) -> list[LlmDecisionRecord]:
        """The run's last rows: its decisions still unresolved at the end (an answer taken
        in time and never acted on, a request unanswered: :meth:`LlmAgent.unresolved`),
        each with why it was not used; counted once however often this is asked (a retried
        end gets the same rows, stored once by the coordinator)."""
        records = [
            self._record(agent, symbol, outcome) for outcome in getattr(agent, "unresolved", list)()
        ]
        if not self._ended:
            self._ended = True
            for record in records:
                self._count(record)
        return records

    def take_outcomes(self, agent: Any, symbol: str) -> list[LlmDecisionRecord]:
        """:meth:`outcomes`, counted: after a step, what it decided is stored with it."""
        records = self.outcomes(agent, symbol)
        for record in records:
            self._count(record)
        return records

    def _count(self, r: LlmDecisionRecord) -> None:
        flags = self._flags
        outcome = _outcome(r)
        flags["stored"] += 1
        flags["before_cutoff"] += int(r.before_cutoff)
        flags["refused"] += int(outcome in ("point_in_time", "lookahead"))
        flags["fallbacks"] += int(bool(r.fallback))
        flags["in_time"] += int(r.valid)
        flags["timeouts"] += int(outcome == "timeout")
        flags["late"] += int(outcome == "late")
        flags["stale"] += int(outcome == "stale")
        flags["unused"] += int(outcome == "unused")
        metrics.record_llm_decision(
            outcome=outcome,
            latency_s=r.latency_ns / 1e9,
            queue_wait_s=r.queue_wait_ns / 1e9,
            batch_size=r.batch_size,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            cache_hit=r.cache_hit,
            cost=r.cost,
            cost_currency=r.cost_currency,
            before_cutoff=r.before_cutoff,
        )

    @property
    def tiers(self) -> TieredCache | None:
        """The decision cache (L1 -> Redis -> the model), once the first request made it."""
        if self._client is None:
            return None
        tiers: TieredCache = self._client.tiers
        return tiers

    def stats(self) -> dict[str, Any]:
        """Counts of the client (model calls) and of the stored decisions, plus the model's
        knowledge cutoff and the point-in-time mode it runs under (for the run summary)."""
        out: dict[str, Any] = dict(self._flags)
        if self._client is None:  # never built: every request raised (counted, stored)
            out["errors"] = self._raised
            return out
        s = self._client.stats
        out.update(
            ok=s.ok,  # answers the model gave (in time or not)
            malformed_json=s.malformed_json,
            schema_violation=s.schema_violation,
            errors=s.errors + self._raised,
            cache_hits=s.cache_hits,
        )
        ident = self._client._identity
        if ident is not None:
            out["knowledge_cutoff"] = ident.knowledge_cutoff
            out["point_in_time"] = ident.point_in_time
        return out


def _error_line(exc: BaseException) -> str:
    """``error: <type>: <first line>`` of what a client raised (Serve's messages run to
    several lines), at most 300 characters as the client's own errors."""
    return f"error: {type(exc).__name__}: {one_line(exc)}"[:300]


def _outcome(r: LlmDecisionRecord) -> str:
    """The ``outcome`` label: ok, cache_hit, or the failure kind (timeout, malformed_json,
    schema_violation, error, point_in_time, lookahead, late, stale, unused)."""
    if r.valid:
        return "cache_hit" if r.cache_hit else "ok"
    return r.error.split(":", 1)[0] or "error"


def print_llm_summary(llm: dict[str, Any], console: Any = None) -> None:
    """One line per LLM agent under the run summary; a run whose decisions predate the
    model's knowledge cutoff says so (the model may know what happened next)."""
    if not llm:
        return
    from rich.console import Console

    console = console or Console()
    for agent_id, s in sorted(llm.items()):
        console.print(
            f"llm {agent_id}: {s.get('stored', 0)} decision rows stored, {s.get('ok', 0)} "
            f"answered by the model ({s.get('in_time', 0)} used in time), "
            f"{s.get('cache_hits', 0)} cached, {s.get('fallbacks', 0)} by the fallback, "
            f"{s.get('refused', 0)} refused, {s.get('timeouts', 0)} timed out, "
            f"{s.get('late', 0)} late answers, {s.get('stale', 0)} stale (answered in time, "
            f"no event before the deadline), {s.get('unused', 0)} unresolved at the end"
        )
        flagged = int(s.get("before_cutoff", 0))
        if flagged:
            console.print(
                f"[bold yellow]POINT-IN-TIME[/bold yellow] llm {agent_id}: {flagged} decisions "
                f"about events before the model's knowledge cutoff "
                f"{s.get('knowledge_cutoff', '?')} (llm.point_in_time="
                f"{s.get('point_in_time', '?')}); the model may know what came next"
            )
