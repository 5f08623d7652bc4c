"""Exceptions guestcpu raises on purpose.

Every error a user can cause is a ``GuestCpuError`` whose message says what is wrong
and, where there is one, what would be right.  The CLI prints ``str(error)`` as one
line and exits with ``error.exit_status``; it never shows a traceback for these.
"""

from __future__ import annotations

from collections.abc import Iterable


class GuestCpuError(Exception):
    """Base of every deliberate guestcpu error."""

    exit_status = 1


class InputError(GuestCpuError):
    """A file, argument or document is malformed or names something that does not exist."""


class UnknownNameError(InputError):
    """A name that is not known (a model, feature, vendor, machine; a fleet's host, cluster or pin), with close
    matches; ``none_known`` is said instead when there is nothing of the kind at all."""

    def __init__(self, kind: str, name: str, known: Iterable[str], where: str = "", *, none_known: str = "") -> None:
        self.kind = kind
        self.name = name
        known_list = list(known)
        self.suggestions = suggest(name, known_list)
        place = f" in {where}" if where else ""
        hint = f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        if not known_list and none_known:
            hint = f"; {none_known}"
        what = f"CPU {kind}" if kind in ("model", "feature", "vendor") else kind
        super().__init__(f"unknown {what} '{name}'{place}{hint}")


class TerminatedError(GuestCpuError):
    """guestcpu got SIGTERM or SIGHUP: it stopped what it did (QEMU too); exit 128 + the signal."""

    def __init__(self, signum: int, done: str = "") -> None:
        import signal

        self.signum = signum
        self.exit_status = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}" + (f"; {done}" if done else ""))


class IncompatibleError(GuestCpuError):
    """CPUs that cannot be combined or compared (different vendors, nothing in common)."""


def suggest(name: str, known: Iterable[str], limit: int = 3) -> list[str]:
    """Close spellings of ``name`` among ``known``, case-insensitively."""
    import difflib  # only on the error path

    known_list = list(known)
    lowered = {k.lower(): k for k in known_list}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=limit, cutoff=0.6)
    return [lowered[h] for h in hits]
