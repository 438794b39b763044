"""The decision client's metering when identical prompts share one model call: the call's
tokens and cost are stored once, and no caller's answer changes another's."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from actors.serve.llm_client import Answer, ServeDecisionClient, prompt_key
from sapphire.llm.prompt import DecisionPrompt, SamplingConfig, cache_key
from tests.actors.scripted_llm import ScriptedHandle, reply

PROMPT = DecisionPrompt(system="Answer in JSON.", user="market BTCUSDT\nmid 61800.00")


def _two_at_once(client: ServeDecisionClient) -> tuple[Answer, Answer]:
    async def both() -> tuple[Answer, Answer]:
        a, b = await asyncio.gather(
            client.decide_detailed(PROMPT, 1), client.decide_detailed(PROMPT, 2)
        )
        return a, b

    return asyncio.run(both())


def test_a_failed_call_shared_by_an_identical_prompt_is_metered_once() -> None:
    # the waiting call got the leader's own answer object: both rows carried the one call's
    # tokens and cost, and each call's latency was written on the one object
    handle = ScriptedHandle(reply('{"action": "buy"'), delay_s=0.1)  # malformed: not cached
    client = ServeDecisionClient(handle, timeout_s=2.0)
    a, b = _two_at_once(client)
    assert handle.calls == 1
    assert a is not b
    assert a.error.startswith("malformed_json") and b.error == a.error
    metered = [x for x in (a, b) if x.prompt_tokens]
    assert len(metered) == 1  # the call's cost is stored once
    (leader,) = metered
    follower = b if leader is a else a
    assert (leader.prompt_tokens, leader.completion_tokens, leader.cpu_s) == (120, 48, 1.3)
    assert str(leader.cost) == "0.0005"
    assert (follower.prompt_tokens, follower.completion_tokens, follower.cpu_s) == (0, 0, 0.0)
    assert follower.cost == 0 and follower.batch_size == 0 and not follower.cache_hit
    assert client.stats.malformed_json == 1  # one model output, counted once


def test_a_good_answer_shared_is_the_followers_cache_hit() -> None:
    handle = ScriptedHandle(reply(), delay_s=0.1)
    client = ServeDecisionClient(handle, timeout_s=2.0)
    a, b = _two_at_once(client)
    assert handle.calls == 1 and a.decision == b.decision and a.valid and b.valid
    assert sorted([a.cache_hit, b.cache_hit]) == [False, True]
    assert a.prompt_tokens + b.prompt_tokens == 120  # the one call's, once
    assert a.cost + b.cost == Decimal("0.0005")


def test_every_answer_names_its_prompts_cache_key() -> None:
    # the stored decision's prompt_hash was always empty: nothing linked it to its prompt
    client = ServeDecisionClient(ScriptedHandle(reply()), timeout_s=2.0)
    assert prompt_key(None, PROMPT) == ""  # the model's identity not known yet
    first = asyncio.run(client.decide_detailed(PROMPT, 1))
    again = asyncio.run(client.decide_detailed(PROMPT, 2))  # from the cache
    expected = cache_key("scripted", PROMPT, SamplingConfig(), "")
    assert first.prompt_hash == again.prompt_hash == expected
    assert again.cache_hit
    assert prompt_key(client._identity, PROMPT) == expected
