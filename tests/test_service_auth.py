"""Who may call ``guestcpu serve`` and where it may listen."""

from __future__ import annotations

from pathlib import Path

import pytest

from guestcpu.service.auth import ServiceConfigError, check_listen, is_loopback, read_token, token_matches

TOKEN = "s3cret-token-of-enough-length"


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "example.org", ""))


def test_token_from_file_beats_environment(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    assert read_token(str(path), {"GUESTCPU_TOKEN": "other-token-also-long-enough"}) == TOKEN
    assert read_token(None, {"GUESTCPU_TOKEN": TOKEN}) == TOKEN
    assert read_token(None, {}) is None


def test_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    path.chmod(0o644)
    with pytest.raises(ServiceConfigError, match=r"can be read by other users \(mode 0644\); run 'chmod 600"):
        read_token(str(path), {})


@pytest.mark.parametrize(("text", "message"), [
    ("short", "has 5 characters; use at least 16"),
    ("two words of a token", "spaces or control characters"),
])
def test_weak_or_malformed_tokens_are_refused(text: str, message: str) -> None:
    with pytest.raises(ServiceConfigError, match=message):
        read_token(None, {"GUESTCPU_TOKEN": text})


def test_missing_token_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServiceConfigError, match=r"cannot read the token file .*No such file"):
        read_token(str(tmp_path / "nope"), {})


def test_listening_rules() -> None:
    check_listen("127.0.0.1", TOKEN, False)
    check_listen("0.0.0.0", TOKEN, False)  # a token makes any address possible
    check_listen("::1", None, True)
    with pytest.raises(ServiceConfigError, match=r"no token: .*--token-file FILE or in \$GUESTCPU_TOKEN"):
        check_listen("127.0.0.1", None, False)
    with pytest.raises(ServiceConfigError, match=r"loopback address only .* not on 0\.0\.0\.0"):
        check_listen("0.0.0.0", None, True)
    with pytest.raises(ServiceConfigError, match="exclude each other"):
        check_listen("127.0.0.1", TOKEN, True)


def test_tokens_compare_exactly() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN, TOKEN[:-1])
    assert not token_matches(TOKEN, TOKEN + "x")
    assert not token_matches(TOKEN, "")
