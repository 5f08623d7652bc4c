"""Start a QEMU process and talk QMP to it, with a timeout on every step.

* guestcpu listens on a private unix socket and QEMU connects to it (``-qmp
  unix:PATH``), so there is no race waiting for a socket file to appear;
* QEMU's stderr goes to a private file; when QEMU dies during start-up the error
  carries its last lines;
* QEMU runs in its own session (process group) with ``PR_SET_PDEATHSIG``, and the
  group is always terminated and reaped: on success, on errors, on timeouts, on
  Ctrl-C and on SIGTERM/SIGHUP (``run_sync`` turns those into the same cancellation,
  then exits 128+signal with one message).  A wrapper script that forks
  (``sh -c 'sleep 600'``) leaves no orphan either, even when a child moved to a new
  session (``setsid``): guestcpu is a child subreaper (``PR_SET_CHILD_SUBREAPER``),
  and every descendant of QEMU, whatever its session, is stopped, killed and reaped.

The QMP protocol itself is the ``qemu.qmp`` library's job; this module only adds
process control, timeouts and clear errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestcpu.errors import GuestCpuError, TerminatedError

#: Default seconds for every step (spawn + greeting, each command, quit).
DEFAULT_TIMEOUT = 15.0
#: Seconds QEMU gets to exit after ``quit`` or SIGTERM before SIGKILL.
_EXIT_GRACE = 3.0
_STDERR_TAIL_LINES = 6

# qemu.qmp logs every message at DEBUG and errors at ERROR level; our errors say it better.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

#: Process groups started here and not yet reaped (killed synchronously as a last resort).
_LIVE_GROUPS: set[int] = set()
#: Socket folders of the QEMUs above, for the shutdown watchdog.
_LIVE_DIRS: set[Path] = set()
#: Seconds after SIGTERM/SIGHUP before the watchdog ends guestcpu whatever the event loop is doing.
_SHUTDOWN_BOUND = 20.0


class QemuError(GuestCpuError):
    """QEMU could not be started, died, hung or refused a command."""


class QemuNotFoundError(QemuError):
    pass


class QemuStartError(QemuError):
    """QEMU exited before it was ready (or while it was being asked something)."""

    def __init__(self, message: str, status: int | None, stderr_tail: list[str]) -> None:
        self.status = status
        self.stderr_tail = stderr_tail
        if stderr_tail:
            message += "; its last output:\n  " + "\n  ".join(stderr_tail)
        super().__init__(message)


class QemuTimeoutError(QemuError):
    pass




class QmpCommandError(QemuError):
    def __init__(self, command: str, error_class: str, desc: str) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"QEMU refused {command}: {desc} ({error_class})")


def _client_class() -> Any:
    """qemu.qmp's QMPClient, without its eager pretty-printing of every message.

    qemu.qmp 0.0.6 formats each message with ``json.dumps(indent=2)`` for a DEBUG log
    line even when DEBUG is off; on a probe (130 large expansion replies) that was two
    thirds of guestcpu's CPU time.  ``_cb_inbound``/``_cb_outbound`` are the hooks the
    library documents for subclasses; these log only when DEBUG is really enabled.
    """
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        from qemu.qmp import QMPClient

        class QuietQMPClient(QMPClient):  # type: ignore[misc]
            def _cb_outbound(self, msg: Any) -> Any:
                if self.logger.isEnabledFor(logging.DEBUG):
                    self.logger.debug("--> %s", str(msg))
                return msg

            def _cb_inbound(self, msg: Any) -> Any:
                if self.logger.isEnabledFor(logging.DEBUG):
                    self.logger.debug("<-- %s", str(msg))
                return msg

        _CLIENT_CLASS = QuietQMPClient
    return _CLIENT_CLASS


_CLIENT_CLASS: Any = None


def resolve_binary(binary: str | None, arch: str = "x86_64") -> str:
    """An executable QEMU path: ``binary`` if given, else ``qemu-system-<arch>`` on PATH."""
    name = binary or f"qemu-system-{arch}"
    if os.sep in name:
        path = Path(name)
        if not path.exists():
            raise QemuNotFoundError(f"QEMU binary {name} does not exist; pass an existing --qemu PATH")
        if path.is_dir() or not os.access(path, os.X_OK):
            raise QemuNotFoundError(
                f"QEMU binary {name} is not an executable file; pass --qemu PATH of qemu-system-{arch}"
            )
        return str(path.resolve())
    found = shutil.which(name)
    if found is None:
        raise QemuNotFoundError(
            f"QEMU binary {name} not found on PATH; install it (Debian: qemu-system-x86 or qemu-system-misc) "
            "or pass --qemu PATH"
        )
    return str(Path(found).resolve())


def kvm_usable() -> bool:
    """True when /dev/kvm can be opened read-write (what QEMU needs for accel=kvm)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def kvm_unusable_reason() -> str | None:
    """Why KVM cannot be used here, or None when it can."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist (no KVM on this host)"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm cannot be opened: {exc.strerror}"
    os.close(fd)
    return None


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
#: whether this process is a child subreaper now; how many QEMUs need it; whether it was one before
_subreaper = False
_subreaper_holders = 0
_subreaper_before = False


def hold_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants while a QEMU runs (Linux; True when it is).

    A QEMU wrapper's child that left QEMU's session (``setsid``) and outlives its
    parent is then re-parented to guestcpu rather than to init, so it can be reaped.
    Only while QEMUs run: the orphans of whatever else the program runs are not ours.
    """
    global _subreaper, _subreaper_holders, _subreaper_before
    if _subreaper_holders == 0:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            before = ctypes.c_int(0)
            libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(before), 0, 0, 0)
            _subreaper_before = bool(before.value)
            _subreaper = _subreaper_before or libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    _subreaper_holders += 1
    return _subreaper


def release_subreaper() -> None:
    global _subreaper, _subreaper_holders
    _subreaper_holders = max(0, _subreaper_holders - 1)
    if _subreaper_holders == 0 and _subreaper and not _subreaper_before:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        _subreaper = False


def _children(pid: int) -> set[int]:
    """The direct children of ``pid`` (``/proc/PID/task/*/children``)."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                found.update(int(child) for child in fh.read().split())
        except (OSError, ValueError):
            continue
    return found


#: Environment variable every QEMU gets (and its children inherit): tells its orphans from other children.
TAG_VARIABLE = "GUESTCPU_QEMU_TAG"


def _has_tag(pid: int, tag: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return f"{TAG_VARIABLE}={tag}".encode() in fh.read().split(b"\0")
    except OSError:
        return False


def _kill_orphans(tag: str) -> None:
    """SIGKILL what a QEMU left behind outside its process group, and reap it.

    Once QEMU has exited, each of its surviving descendants (say, a wrapper's child
    that called ``setsid``) is an orphan, re-parented to this subreaper, or a
    descendant of one.  Those children of ours that carry QEMU's ``tag`` and
    everything below them are stopped first (a stopped process cannot fork), then
    killed and reaped.  Only this process's children are read: no scan of /proc.
    """
    if not _subreaper:
        return
    frontier = {pid for pid in _children(os.getpid()) if _has_tag(pid, tag)}
    seen: set[int] = set()
    while frontier:
        for pid in frontier:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
        seen |= frontier
        frontier = set().union(*(_children(pid) for pid in frontier)) - seen
    for pid in seen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _reap(seen)


def _reap(pids: set[int], seconds: float = 2.0) -> None:
    """Reap those of ``pids`` re-parented to this subreaper (bounded: never blocks for long)."""
    import time

    left = set(pids)
    deadline = time.monotonic() + seconds
    while left:
        for pid in list(left):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    left.discard(pid)
            except (ChildProcessError, OSError):
                left.discard(pid)  # not our child (or already reaped): init or its parent reaps it
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _tail(path: Path, lines: int = _STDERR_TAIL_LINES) -> list[str]:
    try:
        data = path.read_bytes()[-8192:]
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def reap_leftovers() -> None:
    """SIGKILL every QEMU process group this module started and did not reap yet."""
    for pgid in list(_LIVE_GROUPS):
        _kill_group(pgid, signal.SIGKILL)
        _LIVE_GROUPS.discard(pgid)


@dataclass
class QemuProcess:
    """One QEMU process with a QMP session.  Use as ``async with QemuProcess(...) as q``."""

    binary: str
    args: Sequence[str]
    timeout: float = DEFAULT_TIMEOUT
    name: str = "guestcpu"
    _proc: asyncio.subprocess.Process | None = field(default=None, init=False, repr=False)
    _qmp: Any = field(default=None, init=False, repr=False)
    _dir: Path | None = field(default=None, init=False, repr=False)
    _holds_subreaper: bool = field(default=False, init=False, repr=False)
    _tag: str = field(default_factory=lambda: f"{os.getpid()}-{os.urandom(8).hex()}", init=False, repr=False)
    greeting_version: dict[str, Any] = field(default_factory=dict, init=False)

    @property
    def stderr_path(self) -> Path:
        assert self._dir is not None
        return self._dir / "stderr"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stderr_tail(self, lines: int = _STDERR_TAIL_LINES) -> list[str]:
        return _tail(self.stderr_path, lines) if self._dir else []

    def stderr_text(self) -> str:
        if not self._dir:
            return ""
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    async def __aenter__(self) -> QemuProcess:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="guestcpu-qmp-"))
        _LIVE_DIRS.add(self._dir)
        sock = str(self._dir / "qmp.sock")
        self._qmp = _client_class()(self.name)
        await self._qmp.start_server(sock)
        argv = [self.binary, *self.args, "-qmp", f"unix:{sock}"]
        hold_subreaper()
        self._holds_subreaper = True
        with open(self.stderr_path, "wb") as err:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    start_new_session=True,
                    preexec_fn=_set_pdeathsig,
                    env={**os.environ, TAG_VARIABLE: self._tag},
                )
            except BaseException as exc:
                self._holds_subreaper = False
                release_subreaper()
                if isinstance(exc, FileNotFoundError):
                    raise QemuNotFoundError(f"QEMU binary {self.binary} not found; pass --qemu PATH") from None
                if isinstance(exc, PermissionError):
                    raise QemuNotFoundError(f"QEMU binary {self.binary} is not executable; pass --qemu PATH") from None
                raise
        _LIVE_GROUPS.add(self._proc.pid)
        accept = asyncio.ensure_future(self._qmp.accept())
        exited = asyncio.ensure_future(self._proc.wait())
        done, _ = await asyncio.wait({accept, exited}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
        if accept in done and accept.exception() is None:
            exited.cancel()
            version = self._qmp.greeting.QMP.version if self._qmp.greeting else {}
            self.greeting_version = dict(version) if isinstance(version, dict) else {}
            return
        if accept in done:
            # QEMU connected and hung up: it is dying; give it a moment to exit.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), min(self.timeout, _EXIT_GRACE))
            if not exited.done():
                exited.cancel()
                raise QemuError(f"QMP handshake with QEMU ({self.binary}) failed: {accept.exception()}")
        else:
            accept.cancel()
            with contextlib.suppress(BaseException):
                await accept
        if exited.done():
            raise QemuStartError(
                f"QEMU ({Path(self.binary).name}) exited with status {exited.result()} during start-up",
                exited.result(),
                self.stderr_tail(),
            )
        exited.cancel()
        raise QemuTimeoutError(
            f"QEMU ({self.binary}) did not open its QMP monitor within {self.timeout:g} s; "
            "it was stopped (is this really a QEMU system emulator?)"
        )

    def _died(self, what: str) -> QemuStartError:
        status = self._proc.returncode if self._proc else None
        return QemuStartError(f"QEMU exited (status {status}) while answering {what}", status, self.stderr_tail())

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one QMP command and return its ``return`` value."""
        from qemu.qmp import ExecInterruptedError, ExecuteError

        try:
            return await asyncio.wait_for(self._qmp.execute(command, arguments), self.timeout)
        except ExecuteError as exc:
            raise QmpCommandError(command, exc.error_class, str(exc)) from None
        except (ExecInterruptedError, EOFError, ConnectionError):
            if self._proc is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._proc.wait(), 1.0)
            raise self._died(command) from None
        except TimeoutError:
            raise QemuTimeoutError(
                f"QEMU did not answer {command} within {self.timeout:g} s; it was stopped"
            ) from None

    async def execute_many(self, commands: Iterable[tuple[str, dict[str, Any] | None]]) -> list[Any]:
        """Run several commands pipelined (sent at once, answered in order)."""
        return list(await asyncio.gather(*(self.execute(c, a) for c, a in commands)))

    async def wait(self) -> int:
        """Wait (without a timeout) until QEMU exits; its exit status."""
        assert self._proc is not None
        return await self._proc.wait()

    async def close(self) -> None:
        """Quit QEMU (politely, then SIGTERM, then SIGKILL to its group) and reap it."""
        proc, qmp = self._proc, self._qmp
        try:
            if proc is not None and proc.returncode is None and qmp is not None:
                from qemu.qmp import Runstate

                if qmp.runstate == Runstate.RUNNING:
                    with contextlib.suppress(Exception, asyncio.TimeoutError):
                        await asyncio.wait_for(qmp.execute("quit"), 1.0)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), _EXIT_GRACE)
        finally:
            if proc is not None:
                await self._terminate(proc)
            if qmp is not None:
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await asyncio.wait_for(qmp.disconnect(), 1.0)
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                _LIVE_DIRS.discard(self._dir)
                self._dir = None

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        pgid = proc.pid
        try:
            if proc.returncode is None:
                _kill_group(pgid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), _EXIT_GRACE)
                except TimeoutError:
                    _kill_group(pgid, signal.SIGKILL)
                    await asyncio.wait_for(proc.wait(), _EXIT_GRACE)
            # Anything the process forked (a wrapper script's children) goes too.
            _kill_group(pgid, signal.SIGKILL)
        except BaseException:
            _kill_group(pgid, signal.SIGKILL)
            raise
        finally:
            _LIVE_GROUPS.discard(pgid)
            # Children that left the group (setsid): re-parented to us once QEMU is gone.
            _kill_orphans(self._tag)
            if self._holds_subreaper:
                self._holds_subreaper = False
                release_subreaper()


def base_args(machine: str, accel: str) -> list[str]:
    """QEMU arguments for a probe or a paused guest without devices or display."""
    return ["-machine", f"{machine},accel={accel}", "-nodefaults", "-no-user-config", "-display", "none"]


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


async def _stoppable(coro: Any) -> Any:
    """``coro``, cancelled like Ctrl-C cancels it when SIGTERM or SIGHUP arrives (then ``TerminatedError``)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    received: list[int] = []

    watchdog: list[threading.Timer] = []

    def on_signal(signum: int) -> None:
        if not received and task is not None:
            received.append(signum)
            task.cancel()
            # asyncio.wait_for (Python 3.11) can swallow a cancellation that races a step that is
            # just finishing (QMP 'cont'); QEMU itself is then told to quit, so a wait on it ends.
            loop.call_later(1.0, _quit_qemus_unless_done)
            # The orderly stop is bounded step by step; this bounds it as a whole, even if a
            # cancellation is lost in a race or a step blocks the loop.
            timer = threading.Timer(_SHUTDOWN_BOUND, _hard_stop, (signum,))
            timer.daemon = True
            timer.start()
            watchdog.append(timer)

    def _quit_qemus_unless_done() -> None:
        if task is not None and not task.done():
            for pgid in list(_LIVE_GROUPS):
                _kill_group(pgid, signal.SIGTERM)

    installed = {}
    for signum in _STOP_SIGNALS:
        previous = signal.getsignal(signum)
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed[signum] = previous
        except (ValueError, RuntimeError, NotImplementedError):
            pass  # not the main thread: the caller handles signals
    try:
        result = await coro
    except asyncio.CancelledError:
        if received:
            raise TerminatedError(received[0], "QEMU was asked to quit and is gone") from None
        raise
    else:
        if received:  # the cancellation was lost, QEMU quit on our SIGTERM: still a stop by signal
            raise TerminatedError(received[0], "QEMU was asked to quit and is gone")
        return result
    finally:
        for timer in watchdog:
            timer.cancel()
        for signum, previous in installed.items():
            loop.remove_signal_handler(signum)
            # asyncio leaves SIG_DFL behind; whoever handled the signal before does again.
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)


def _hard_stop(signum: int) -> None:
    """The orderly stop after a signal took too long: kill every QEMU, clean up, exit 128+signal."""
    reap_leftovers()
    for folder in list(_LIVE_DIRS):
        shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.write(2, f"guestcpu: error: stopped by {signal.Signals(signum).name}; QEMU did not quit in "
                    f"{_SHUTDOWN_BOUND:.0f} s and was killed\n".encode())
    os._exit(128 + signum)


def run_sync(coro: Any) -> Any:
    """``asyncio.run`` that never leaves a QEMU behind, even on Ctrl-C, SIGTERM or SIGHUP."""
    try:
        return asyncio.run(_stoppable(coro))
    finally:
        reap_leftovers()
