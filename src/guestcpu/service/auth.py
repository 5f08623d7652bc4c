"""Who may call the service, and where it may listen (no I/O beyond reading the token file).

A token is required: from ``--token-file`` or ``$GUESTCPU_TOKEN``, at least
``MIN_TOKEN_LENGTH`` characters, compared in constant time.  Only on a loopback
address may the service run without one, and only when asked to in so many words.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from pathlib import Path

from guestcpu.errors import GuestCpuError

ENV_TOKEN = "GUESTCPU_TOKEN"
MIN_TOKEN_LENGTH = 16


class ServiceConfigError(GuestCpuError):
    """The service cannot start as asked (no token, a token file others can read, a bad address)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_token(token: str, where: str) -> str:
    token = token.strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise ServiceConfigError(
            f"the token from {where} has {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
            "(e.g. 'python3 -c \"import secrets; print(secrets.token_urlsafe(32))\"')"
        )
    if any(c.isspace() for c in token) or not token.isprintable():
        raise ServiceConfigError(f"the token from {where} has spaces or control characters; use one printable word")
    return token


def read_token(token_file: str | None, environ: dict[str, str] | None = None) -> str | None:
    """The token from the file if given, else from ``$GUESTCPU_TOKEN``, else None."""
    env = os.environ if environ is None else environ
    if token_file is not None:
        path = Path(token_file)
        try:
            mode = path.stat().st_mode
            text = path.read_text()
        except OSError as exc:
            raise ServiceConfigError(f"cannot read the token file {token_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ServiceConfigError(f"the token file {token_file} is not text") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ServiceConfigError(
                f"the token file {token_file} can be read by other users (mode {stat.S_IMODE(mode):04o}); "
                f"run 'chmod 600 {token_file}'"
            )
        return _check_token(text, f"the token file {token_file}")
    if env.get(ENV_TOKEN):
        return _check_token(env[ENV_TOKEN], f"${ENV_TOKEN}")
    return None


def check_listen(host: str, token: str | None, insecure_no_auth: bool) -> None:
    """Refuse to listen without a token, except on loopback with --insecure-no-auth."""
    if token is not None and insecure_no_auth:
        raise ServiceConfigError("--insecure-no-auth and a token exclude each other; give one of them")
    if token is None and not insecure_no_auth:
        raise ServiceConfigError(
            f"no token: put one in a file given with --token-file FILE or in ${ENV_TOKEN} "
            "(or, on a loopback address only, run with --insecure-no-auth)"
        )
    if token is None and not is_loopback(host):
        raise ServiceConfigError(
            f"--insecure-no-auth is allowed on a loopback address only (127.0.0.1, ::1), not on {host}"
        )


def token_matches(expected: str, presented: str) -> bool:
    """Constant-time comparison (the time taken does not depend on where the tokens differ)."""
    return hmac.compare_digest(expected.encode(), presented.encode())
