"""``[[mirror.proxy]]`` validation: mistakes fail at start with the key named, secrets stay out of reprs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hallmark.config import ConfigError, load_config


def load(tmp_path: Path, body: str) -> object:
    path = tmp_path / "c.toml"
    path.write_text(body)
    return load_config(path, environ={})


def test_a_valid_proxy_keeps_its_password_out_of_reprs(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        '[[mirror.proxy]]\nnamespace = "hub"\nupstream = "https://registry-1.example/"\n'
        'username = "u"\npassword = "p4ss-w0rd-secret"\nrepositories = ["library/*"]\n',
    )
    (proxy,) = cfg.mirror.proxy  # type: ignore[attr-defined]
    assert proxy.upstream == "https://registry-1.example" and proxy.tag_ttl_seconds == 300
    assert "p4ss-w0rd-secret" not in repr(cfg) and "p4ss-w0rd-secret" not in str(proxy)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('namespace = "hub"\nupstream = "http://plain.example"', "insecure"),
        ('namespace = "hub"\nupstream = "https://u:p@host.example"', "credentials"),
        ('namespace = "Hub/x"\nupstream = "https://host.example"', "namespace"),
        ('namespace = "hub"\nupstream = "ftp://host.example"', "upstream"),
    ],
)
def test_bad_proxy_settings_are_refused(tmp_path: Path, body: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load(tmp_path, "[[mirror.proxy]]\n" + body + "\n")


def test_a_namespace_configured_twice_is_refused(tmp_path: Path) -> None:
    one = '[[mirror.proxy]]\nnamespace = "hub"\nupstream = "https://a.example"\n'
    with pytest.raises(ConfigError, match="twice"):
        load(tmp_path, one + one)


def test_the_password_can_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-a-file\n")
    body = '[[mirror.proxy]]\nnamespace = "hub"\nupstream = "https://a.example"\nusername = "u"\n'
    cfg = load(tmp_path, body + f'password_file = "{tmp_path / "pw"}"\n')
    assert cfg.mirror.proxy[0].password == "from-a-file"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="password_file"):
        load(tmp_path, body + f'password_file = "{tmp_path / "missing"}"\n')
    with pytest.raises(ConfigError, match="not both"):
        load(tmp_path, body + f'password = "x"\npassword_file = "{tmp_path / "pw"}"\n')
