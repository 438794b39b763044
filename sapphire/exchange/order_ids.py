"""Run-scoped client order ids, as a venue sees them.

Inside Sapphire an order is ``agent-seq`` (deterministic, so a re-sent order is recognised).
At a venue that alone is not enough: a new run, or a second run on the same account, would
reuse ``mm-1`` and the venue would refuse it as a duplicate (or, worse, a gateway would adopt
the other run's order as its own). So every id that leaves is prefixed with a tag derived
from the run id: ``sp`` + 6 base-32 characters, then ``.``, then the internal id when it fits
the venue's length and charset, else a hash of it. The same run (a restart, ``--resume``)
gets the same tag, so its journalled orders are found again; any other run's never match.
"""

from __future__ import annotations

import base64
import hashlib
import re

# Binance's newClientOrderId: ^[\.A-Z\:/a-z0-9_-]{1,36}$; OKX allows 32 alphanumerics,
# Bybit 36: 36 with this charset is the common default, narrower venues set their own.
DEFAULT_MAX_LEN = 36
DEFAULT_CHARSET = r"A-Za-z0-9._:/-"
_TAG_CHARS = 6
_SAPPHIRE_TAG = re.compile(r"^sp[a-z2-7]{6}\.")


def _b32(data: str, n: int) -> str:
    digest = hashlib.blake2b(data.encode(), digest_size=20).digest()
    return base64.b32encode(digest).decode().lower().rstrip("=")[:n]


class VenueOrderIds:
    """Maps internal client order ids to the ids sent to one venue for one run."""

    def __init__(
        self, run_id: str, *, max_len: int = DEFAULT_MAX_LEN, charset: str = DEFAULT_CHARSET
    ) -> None:
        if max_len < 16:
            raise ValueError(f"client order id max_len {max_len}: a venue id needs at least 16")
        self.run_id = run_id
        self.tag = "sp" + _b32(run_id, _TAG_CHARS)
        self.max_len = max_len
        self._allowed = re.compile(f"^[{charset}]+$")

    def venue_id(self, client_order_id: str) -> str:
        readable = f"{self.tag}.{client_order_id}"
        if len(readable) <= self.max_len and self._allowed.match(readable):
            return readable
        # too long or outside the charset: a hash keeps it unique and deterministic
        room = self.max_len - len(self.tag) - 2
        return f"{self.tag}.h{_b32(client_order_id, min(room, 32))}"

    def is_ours(self, venue_client_id: str | None) -> bool:
        """Sent by this run (any incarnation of it)."""
        return bool(venue_client_id) and str(venue_client_id).startswith(self.tag + ".")


def is_sapphire_id(venue_client_id: str | None) -> bool:
    """Sent by some Sapphire run (this one or another)."""
    return bool(venue_client_id) and _SAPPHIRE_TAG.match(str(venue_client_id)) is not None
