"""The `web` config section: strict, every check pinned to its key, secrets masked in logs."""

from __future__ import annotations

import textwrap

import pytest

from tests.web.conftest import MEDIA_KEY
from vigil.config import VigilConfig
from vigil.config.loader import parse_config
from vigil.errors import ConfigError
from vigil.logs import config_secrets
from vigil.passwords import hash_password

HASH = hash_password("pw-for-config-tests")


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "t.yaml", {"H": HASH})
    return [str(i) for i in info.value.issues]


def test_defaults_bind_loopback_and_need_no_secret() -> None:
    web = VigilConfig().web
    assert (web.enabled, web.host, web.port, web.link_ttl_s) == (True, "127.0.0.1", 8080, 7 * 86_400)
    assert web.store.startswith(".state/") and web.users == [] and web.public_url is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("web:\n  public_url: https://v.example\n", "line 1: web.media_key: web.public_url is set"),
        (
            "web:\n  public_url: ftp://v.example\n  media_key: " + "k" * 40 + "\n",
            "line 2: web.public_url: public_url must start with https://",
        ),
        ("web:\n  media_key: short\n", "web.media_key: media_key must be at least 32 characters"),
        (
            "web:\n  users:\n    - {name: a, password_hash: '${H}'}\n    - {name: a, password_hash: '${H}'}\n",
            "web.users[1].name: name 'a' is used twice",
        ),
        ("web:\n  users:\n    - {name: a, role: root, password_hash: '${H}'}\n", "line 3: web.users[0].role"),
        (
            "web:\n  tokens:\n    - {name: t, token: short}\n",
            "line 3: web.tokens[0].token: token must be at least 24 characters",
        ),
        (
            "web:\n  clip_pre_s: 300\n  clip_post_s: 300\n  clip_max_s: 500\n",
            "web.clip_max_s: clip_max_s must be at least clip_pre_s + clip_post_s",
        ),
        ("web:\n  port: 0\n", "line 2: web.port"),
        ("web:\n  colour: blue\n", "line 2: web.colour: unknown key"),
        (
            "web:\n  users:\n    - {name: a, password_hash: 'scrypt$n=2097152,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='}\n",
            "web.users[0].password_hash: password_hash has scrypt parameters out of bounds",
        ),
    ],
)
def test_bad_web_config_names_its_key(text: str, expected: str) -> None:
    found = issues(text)
    assert any(expected in issue for issue in found), found


def test_web_secrets_are_masked_in_logs() -> None:
    config = parse_config(
        f"web:\n  users: [{{name: a, password_hash: '${{H}}'}}]\n  tokens: [{{name: t, token: '{'t' * 30}'}}]\n"
        f"  public_url: https://v.example\n  media_key: {MEDIA_KEY}\n",
        "t.yaml",
        {"H": HASH},
    )
    found = config_secrets(config)
    assert HASH in found and "t" * 30 in found and MEDIA_KEY in found
    assert HASH not in repr(config) and MEDIA_KEY not in repr(config)


def test_vigil_web_names_the_extra_when_it_is_missing() -> None:
    import subprocess
    import sys

    code = "import sys; sys.modules['av'] = None; from vigil.cli import main; raise SystemExit(main(['web']))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "av not installed" in result.stderr and "pip install 'vigil[web]'" in result.stderr
