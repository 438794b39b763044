"""Secrets never show: repr/str/format, msgspec dumps, pickling, log records."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sapphire.config.secrets import (
    REDACTED,
    ExchangeKeys,
    RedactingFilter,
    Secret,
    SecretError,
    dumps,
    load_exchange_keys,
    load_secret,
)

KEY = "AKIAxq3Lz8vTn0PbR7sW"
SECRET = "s3cr3t-9f8e7d6c5b4a-zz"

secret_text = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=4, max_size=64
)


@given(secret_text)
def test_no_rendering_shows_the_value(value: str) -> None:
    s = Secret(value)
    for shown in (
        repr(s),
        str(s),
        f"{s}",
        f"{s!r}",
        f"{s} {s!r}",
        repr([s]),
        repr({"k": s}),
    ):
        assert value not in shown or value in REDACTED + "Secret('')"
    assert s.reveal() == value and s == Secret(value) and s != Secret(value + "x")


def test_config_dumps_are_redacted_and_plain_msgspec_refuses() -> None:
    keys = ExchangeKeys(exchange="binance", api_key=Secret(KEY), api_secret=Secret(SECRET))
    text = dumps(keys).decode()
    assert KEY not in text and SECRET not in text and text.count(REDACTED) == 2
    assert msgspec.json.decode(text)["exchange"] == "binance"
    with pytest.raises(TypeError):  # no enc_hook: an error, never the value
        msgspec.json.encode(keys)
    with pytest.raises(TypeError, match="not serializable"):
        pickle.dumps(keys)
    assert KEY not in repr(keys) and SECRET not in repr(keys)


def test_loading_from_env_file_and_secrets_dir(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    (tmp_path / "sapphire_binance_api_secret").write_text(SECRET)
    env = {"SAPPHIRE_BINANCE_API_KEY_FILE": str(tmp_path / "key")}
    keys = load_exchange_keys("binance", environ=env, secrets_dir=tmp_path)
    assert keys.api_key.reveal() == KEY and keys.api_secret.reveal() == SECRET
    assert keys.passphrase is None
    direct = load_secret("X", environ={"X": f"  {KEY} "})
    assert direct is not None and direct.reveal() == KEY


def test_missing_or_bad_secrets_are_clear_errors_without_values(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="SAPPHIRE_KRAKEN_API_KEY"):
        load_exchange_keys("kraken", environ={})
    with pytest.raises(SecretError, match="does not exist"):
        load_secret("X", environ={"X_FILE": str(tmp_path / "nope")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretError, match="empty"):
        load_secret("X", environ={"X_FILE": str(tmp_path / "empty")})
    assert load_secret("X", environ={}, required=False) is None


def test_log_records_are_masked_in_messages_args_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter([Secret(KEY), Secret(SECRET), None]))
    log = logging.getLogger("sapphire.test.secrets")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("connecting with key %s", KEY)
        log.warning("GET /api?signature=x&apiKey=" + KEY)
        log.warning("object %r", Secret(SECRET))
        try:
            raise RuntimeError(f"auth failed for {SECRET}")
        except RuntimeError:
            log.exception("exchange error")
        log.info("quiet")  # below the level: never formatted
        log.warning("no secret here: %d orders", 3)
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert KEY not in out and SECRET not in out
    assert out.count(REDACTED) == 4
    assert "no secret here: 3 orders" in out and "RuntimeError" in out


def test_a_loaded_secret_is_masked_in_what_the_process_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A secret a process hands to a client is masked in every record its handlers write
    from then on (a library's error quoting it): the module said so, and nothing
    installed the filter."""
    import logging

    from sapphire.config.secrets import REDACTED, redact_in_logs

    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    try:
        redact_in_logs(["sekrit-CANARY-1"])
        logging.getLogger("some.library").warning("auth failed for %s", "sekrit-CANARY-1")
        try:
            raise ValueError("bad password sekrit-CANARY-1")
        except ValueError:
            logging.getLogger("other").exception("connect")
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    assert "sekrit-CANARY-1" not in text
    assert "auth failed for " + REDACTED in text and "bad password " + REDACTED in text
