"""A live venue's alerts in the coordinator: a start-up retry's alert stands for every
retry before it. A venue down for two days retried once a minute, and every retry's alert
was kept (2,880), keyed, shown in the summary and pickled into every checkpoint."""

from __future__ import annotations

import pickle
from typing import Any

from actors.coordinator import CoordinatorActor
from sapphire.model.orders import VenueAlert

T0 = 1_723_161_256_000_000_000
DOWN = "venue start-up failed: ExchangeNotAvailable: 503 (try {n}; again in 60 s)"


class _Core:
    def __init__(self) -> None:
        self.kills: list[str] = []

    def request_kill(self, why: str) -> None:
        self.kills.append(why)


def _coordinator() -> Any:
    # the actor's own class, without Ray: only its alert bookkeeping runs here
    actor: Any = object.__new__(CoordinatorActor.__ray_metadata__.modified_class)
    actor.venue_alerts, actor._alert_keys, actor.reconciliation = [], set(), {}
    actor._unreached, actor.failure, actor._start_retries = "", "", set()
    actor.core = _Core()
    return actor


def test_start_up_retries_keep_one_alert_and_the_rest_are_kept() -> None:
    actor = _coordinator()
    actor._take_alerts([VenueAlert(ts_event_ns=T0, kind="reconciled", message="2 open")])
    for n in range(1, 2_881):  # two days, one retry a minute
        alert = VenueAlert(ts_event_ns=T0 + n * 60 * 10**9, kind="start", message=DOWN.format(n=n))
        actor._take_alerts([alert])
    assert actor.venue_alerts == ["reconciled: 2 open", f"start: {DOWN.format(n=2880)}"]
    assert len(actor._alert_keys) == 1
    assert actor._unreached == DOWN.format(n=2880)
    # a refused key after the retries is a fatal alert of its own, kept beside the last retry
    actor._take_alerts(
        [VenueAlert(ts_event_ns=T0 + 1, kind="start", message="bad key", fatal=True)]
    )
    assert actor.venue_alerts[-1] == "start: bad key" and actor.failure == "bad key"
    assert len(actor.venue_alerts) == 3
    assert len(pickle.dumps((actor.venue_alerts, actor._alert_keys))) < 1_000
