"""The [central] section: off by default, a wrong value names its key, the token is a secret."""

from __future__ import annotations

import pytest

from edge.config import parse_settings
from edge.errors import ConfigError

BASE = {"agent": {"store_id": "s1"}, "api": {"token": "api-token-123456"}}


def test_without_url_the_central_api_is_off() -> None:
    """No [central] section: url is empty (sync stays off) and the shipped defaults apply."""
    central = parse_settings(BASE).central
    assert central.url == "" and central.start_jitter_s == 2.0 and central.probe_max_s == 0.5
    assert central.page_size == 1000


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        ({"url": "ftp://central"}, "central.url", "http:// or https://"),
        ({"url": "https://central.example.com"}, "central.token", "is required when central.url is set"),
        ({"rate_limit_rps": 0}, "central.rate_limit_rps", "greater than 0"),
        ({"page_size": 5000}, "central.page_size", "between 1 and 1000"),
        ({"proxy": "proxy.lan:3128"}, "central.proxy", "must be http://host:port"),
        ({"proxy": "https://proxy.lan:3128"}, "central.proxy", "must be http://host:port"),
        ({"proxy": "http://proxy.lan"}, "central.proxy", "must be http://host:port"),
        ({"proxy": "http://me:pw@proxy.lan:3128"}, "central.proxy", "EDGE_CENTRAL_PROXY_PASSWORD"),
        ({"proxy_user": "store-7"}, "central.proxy", "is required when central.proxy_user"),
        ({"proxy": "http://proxy.lan:3128", "proxy_user": "a:b"}, "central.proxy_user", "colon"),
        ({"proxy": "http://proxy.lan:3128", "proxy_password": "pw"}, "central.proxy_user", "is required when"),
    ],
)
def test_a_wrong_value_names_the_key(section: dict[str, object], key: str, problem: str) -> None:
    """Each problem stops the start with the key and what is wrong."""
    with pytest.raises(ConfigError, match=problem) as caught:
        parse_settings({**BASE, "central": section})
    assert caught.value.key == key


def test_the_token_comes_from_the_environment_and_stays_secret() -> None:
    """EDGE_CENTRAL_TOKEN sets the token; it is listed among the secrets the logs scrub and never shows in a repr."""
    settings = parse_settings(
        {**BASE, "central": {"url": "https://central.example.com"}}, env={"EDGE_CENTRAL_TOKEN": "central-secret-987"}
    )
    assert settings.central.token.get() == "central-secret-987"
    assert "central-secret-987" in settings.secrets() and "central-secret-987" not in repr(settings.central)


def test_the_proxy_password_comes_from_the_environment_and_stays_secret() -> None:
    """EDGE_CENTRAL_PROXY_PASSWORD sets the proxy's password: a secret like the token (scrubbed, never in a repr)."""
    settings = parse_settings(
        {**BASE, "central": {"proxy": "http://10.0.0.1:3128", "proxy_user": "store-7"}},
        env={"EDGE_CENTRAL_PROXY_PASSWORD": "proxy-secret-654"},
    )
    assert settings.central.proxy_password.get() == "proxy-secret-654"
    assert "proxy-secret-654" in settings.secrets() and "proxy-secret-654" not in repr(settings.central)
