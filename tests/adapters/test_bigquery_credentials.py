"""BigQuery credentials from ``storage.params.credentials_env``: a key file's path or the
key itself, and no error ever says the value (read as a path, a key's JSON raised "File
name too long: '<the whole private key>'", which every command printed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sapphire.adapters.stores import BigQueryParams, StoreError, bigquery_client

CANARY = "BQKEYCANARY"


@pytest.fixture(scope="module")
def key_json() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": CANARY + "0" * 29,
            "private_key": pem,
            "client_email": "svc@proj.iam.gserviceaccount.com",
            "client_id": "1234567890",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


def _params(**kw: str) -> BigQueryParams:
    return BigQueryParams(project="proj", dataset="ds", credentials_env="BQ_KEY", **kw)


@pytest.mark.parametrize("form", ["path", "json", "file", "secrets_dir"])
def test_each_documented_form_gives_the_service_account(
    form: str, key_json: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(key_json)
    params = _params()
    if form == "path":
        monkeypatch.setenv("BQ_KEY", str(key_file))
    elif form == "json":
        monkeypatch.setenv("BQ_KEY", key_json)
    elif form == "file":
        monkeypatch.setenv("BQ_KEY_FILE", str(key_file))
    else:
        (tmp_path / "BQ_KEY").write_text(key_json)
        params = _params(secrets_dir=str(tmp_path))
    client = bigquery_client(params)
    assert client._credentials.service_account_email == "svc@proj.iam.gserviceaccount.com"


def test_a_broken_key_is_refused_without_its_value(
    key_json: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem_line = json.loads(key_json)["private_key"].splitlines()[1]
    broken = json.dumps({k: v for k, v in json.loads(key_json).items() if k != "client_email"})
    for value in (broken, key_json[:-2], "/no/such/key.json", key_json.replace("{", "[", 1)):
        monkeypatch.setenv("BQ_KEY", value)
        with pytest.raises(StoreError) as caught:
            bigquery_client(_params())
        text = str(caught.value)
        assert text.startswith("storage.params.credentials_env: BQ_KEY"), text
        assert CANARY not in text and pem_line not in text and "PRIVATE KEY" not in text
