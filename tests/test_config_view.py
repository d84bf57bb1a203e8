"""The effective configuration as ``ailb config``, ``GET /admin/config`` and the console show it:
no secret in it, whatever the setting (a YAML key's hash, credentials in any URL, secret-named
fields of a key's metadata)."""

from __future__ import annotations

import json

import httpx
from hypothesis import assume, given
from hypothesis import strategies as st

from ailb.audit.entry import is_secret
from ailb.config.view import masked, without_password
from tests.conftest import StartGateway, auth, make_settings

_WORD = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=16)
YAML_KEY = "sk-ailb-0123456789ab-" + "s3cretpart" * 3


@given(user=_WORD, password=_WORD, host=st.sampled_from(["db.internal", "10.0.0.7"]),
       port=st.none() | st.integers(1, 65535), scheme=st.sampled_from(
           ["http", "https", "postgresql", "redis"]))
def test_no_url_keeps_its_password(user: str, password: str, host: str, port: int | None,
                                   scheme: str) -> None:
    netloc = f"{host}:{port}" if port else host
    assume(password not in f"{scheme}://{user}@{netloc}/x" and user not in f"{scheme}://{netloc}")
    shown = without_password(f"{scheme}://{user}:{password}@{netloc}/x?token={password}&a=1")
    assert password not in shown
    assert shown == f"{scheme}://{user}:***@{netloc}/x?token=***&a=1"
    assert user not in without_password(f"{scheme}://{user}@{netloc}/")  # a lone user: a token


@given(st.dictionaries(st.sampled_from(["password", "api_key", "x-token", "client_secret",
                                        "owner", "url", "note"]), _WORD, min_size=1))
def test_secret_named_metadata_is_hidden_at_any_depth(metadata: dict[str, str]) -> None:
    shown = masked({"outer": {"metadata": metadata}})["outer"]["metadata"]
    for name, value in metadata.items():
        assert (shown[name] == "***") == is_secret(name)
        if not is_secret(name):
            assert shown[name] == value


def test_a_yaml_key_shows_no_hash(tmp_path: object) -> None:
    settings = make_settings(tmp_path, {"K1": YAML_KEY},  # type: ignore[arg-type]
                             KEYS=[{"key_env": "K1", "name": "ci"}])
    [key] = masked(settings)["keys"]
    assert key["secret_hash"] == "***" and key["id"] == "0123456789ab"
    assert settings.keys[0].secret_hash not in json.dumps(masked(settings))


async def test_admin_config_shows_no_secret(start_gateway: StartGateway,
                                            http: httpx.AsyncClient) -> None:
    gw = await start_gateway(
        environ={"K1": YAML_KEY,
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://otel:OtelPw123@127.0.0.1:9/v1"},
        KEYS=[{"key_env": "K1", "name": "ci", "metadata": {"password": "MetaPw123", "owner": "ops",
                                             "dsn": "https://u:DsnPw123@h.example/"}}],
        CHROMA_URL="https://chroma.internal/?token=ChromaTok123", ENABLE_MEMORY=False,
    )
    config = await http.get(f"{gw.http_url}/admin/config", headers=auth())
    assert config.status_code == 200
    text = config.text
    for secret in ("OtelPw123", "MetaPw123", "DsnPw123", "ChromaTok123",
                   gw.services.settings.keys[0].secret_hash, YAML_KEY):
        assert secret not in text, secret
    settings = config.json()["settings"]
    assert settings["tracing"]["endpoint"] == "http://otel:***@127.0.0.1:9/v1"
    assert settings["chroma_url"] == "https://chroma.internal/?token=***"
    [key] = settings["keys"]
    assert key["fields"]["metadata"] == {"password": "***", "owner": "ops",
                                         "dsn": "https://u:***@h.example/"}
