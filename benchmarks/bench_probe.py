"""QEMU capabilities probe: guestcpu vs the raw QMP minimum, cache hits, libvirt's cold probe.

    .venv/bin/python benchmarks/bench_probe.py [--accel tcg|kvm] [--repeat N] [--no-libvirt]

* guestcpu full probe: ``guestcpu.qemu.probe.probe`` (start QEMU, every query,
  build the capabilities, stop QEMU), no cache;
* raw QMP minimum: a bare script on ``-qmp stdio`` issuing the same queries one
  after another (version, machines, definitions, host/max static + full +
  migratable=off, static expansion of every model) and nothing else — target:
  guestcpu <= 1.5x of it; the same bare script with the requests pipelined is shown
  too;
* cache hit: ``guestcpu.qemu.cache.load_caps`` on a valid cache (stat the binary,
  read the host facts, parse the document) — target <= 10 ms;
* libvirt 9.0 for reference: an embedded QEMU driver with an empty cache until
  ``virsh domcapabilities`` answers (``qemu:///embed?root=EMPTY``), once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from guestcpu.qemu.cache import load_caps  # noqa: E402
from guestcpu.qemu.probe import default_accel, probe  # noqa: E402
from guestcpu.qemu.process import resolve_binary  # noqa: E402


def raw_probe(binary: str, accel: str, pipelined: bool = False) -> int:
    """The bare minimum: QMP over stdio, the same queries; returns the number of replies."""
    host = "host" if accel == "kvm" else "max"
    proc = subprocess.Popen(
        [binary, "-machine", f"none,accel={accel}", "-nodefaults", "-no-user-config", "-display", "none",
         "-qmp", "stdio"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    out = proc.stdout

    def send(cmd: str, args: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"execute": cmd}
        if args is not None:
            msg["arguments"] = args
        proc.stdin.write(json.dumps(msg).encode() + b"\n")  # type: ignore[union-attr]

    def receive() -> Any:
        while True:
            reply = json.loads(out.readline())
            if "return" in reply or "error" in reply:
                return reply.get("return")

    json.loads(out.readline())  # greeting
    send("qmp_capabilities")
    proc.stdin.flush()
    receive()
    first: list[tuple[str, dict[str, Any] | None]] = [
        ("query-target", None), ("query-version", None), ("query-machines", None), ("query-cpu-definitions", None),
        ("query-cpu-model-expansion", {"type": "static", "model": {"name": host}}),
        ("query-cpu-model-expansion", {"type": "full", "model": {"name": host}}),
        ("query-cpu-model-expansion", {"type": "static", "model": {"name": host, "props": {"migratable": False}}}),
    ]
    replies = []
    for cmd, args in first:
        send(cmd, args)
        if not pipelined:
            proc.stdin.flush()
            replies.append(receive())
    if pipelined:
        proc.stdin.flush()
        replies = [receive() for _ in first]
    definitions = replies[3]
    names = [d["name"] for d in definitions]
    # the CPU types whose property lists guestcpu records: host, max and one named model
    special = [d["typename"] for d in definitions if d["name"] in ("host", "max")]
    named = [d["typename"] for d in definitions if d["name"] not in ("host", "max", "base")][:1]
    questions = [("query-cpu-model-expansion", {"type": "static", "model": {"name": name}}) for name in names]
    questions += [("qom-list-properties", {"typename": t}) for t in sorted(set(special + named))]
    expansions = []
    for cmd, args in questions:
        send(cmd, args)
        if not pipelined:
            proc.stdin.flush()
            expansions.append(receive())
    if pipelined:
        proc.stdin.flush()
        expansions = [receive() for _ in questions]
    send("quit")
    proc.stdin.flush()
    proc.wait()
    return len(replies) + len(expansions)


def median_time(fn: Any, repeat: int) -> float:
    fn()  # warm the page cache and Python's imports
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _libvirt_qemu_account() -> str | None:
    """Debian's libvirt looks up the libvirt-qemu user before reading qemu.conf; create it if missing.

    libvirt-daemon-system's postinst would create it, but that package needs systemd;
    as root the benchmark makes the same system account (uid/gid 64055 when free).
    """
    import grp
    import pwd

    try:
        pwd.getpwnam("libvirt-qemu")
        return None
    except KeyError:
        pass
    if os.geteuid() != 0:
        return "the libvirt-qemu user is missing and creating it needs root"
    try:
        grp.getgrnam("libvirt-qemu")
    except KeyError:
        subprocess.run(["groupadd", "--system", "libvirt-qemu"], check=True)
    subprocess.run(
        ["useradd", "--system", "--gid", "libvirt-qemu", "--home-dir", "/var/lib/libvirt", "--no-create-home",
         "--shell", "/usr/sbin/nologin", "--comment", "Libvirt Qemu", "libvirt-qemu"],
        check=True,
    )
    print("(created the libvirt-qemu system account libvirt expects, as libvirt-daemon-system would)")
    return None


def libvirt_cold(binary: str, accel: str) -> float | str:
    """Seconds until an empty embedded libvirt answers domcapabilities, or why it could not run."""
    virsh = shutil.which("virsh")
    if virsh is None:
        return "virsh not installed"
    problem = _libvirt_qemu_account()
    if problem:
        return problem
    root = tempfile.mkdtemp(prefix="guestcpu-bench-libvirt-")
    # As in shared research: QEMU runs as root (to open /dev/kvm) and logs to files (no virtlogd).
    Path(root, "etc").mkdir()
    Path(root, "etc", "qemu.conf").write_text('user = "root"\ngroup = "root"\nstdio_handler = "file"\n')
    try:
        start = time.perf_counter()
        subprocess.run(
            [virsh, "-c", f"qemu:///embed?root={root}", "domcapabilities", "--emulatorbin", binary,
             "--virttype", "kvm" if accel == "kvm" else "qemu"],
            check=True, capture_output=True, timeout=300,
        )
        return time.perf_counter() - start
    except subprocess.CalledProcessError as exc:
        lines = [ln for ln in exc.stderr.decode(errors="replace").splitlines() if ln.startswith("error:")]
        return lines[-1] if lines else f"virsh exited with {exc.returncode}"
    except (subprocess.SubprocessError, OSError) as exc:
        return str(exc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accel", choices=["kvm", "tcg"], default=None)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--qemu", default=None)
    parser.add_argument("--no-libvirt", action="store_true")
    opts = parser.parse_args()
    binary = resolve_binary(opts.qemu)
    accels = [opts.accel] if opts.accel else (["tcg", "kvm"] if default_accel() == "kvm" else ["tcg"])

    print(f"{'measurement':<52} {'guestcpu':>10} {'peer':>10} {'ratio':>7}  target")
    for accel in accels:
        ours = median_time(lambda a=accel: probe(binary, a), opts.repeat)
        raw = median_time(lambda a=accel: raw_probe(binary, a), opts.repeat)
        raw_pipe = median_time(lambda a=accel: raw_probe(binary, a, pipelined=True), opts.repeat)
        print(f"{'full probe (' + accel + ') vs raw QMP, sequential':<52} {ours * 1000:8.1f}ms {raw * 1000:8.1f}ms "
              f"{ours / raw:6.2f}x  <= 1.5x")
        print(f"{'full probe (' + accel + ') vs raw QMP, pipelined':<52} {ours * 1000:8.1f}ms {raw_pipe * 1000:8.1f}ms "
              f"{ours / raw_pipe:6.2f}x")
        with tempfile.TemporaryDirectory() as cache:
            load_caps(binary, accel, cache_dir=Path(cache))
            hits = []
            for _ in range(max(opts.repeat, 30)):
                start = time.perf_counter()
                result = load_caps(binary, accel, cache_dir=Path(cache))
                hits.append(time.perf_counter() - start)
                assert result.hit
            hit = statistics.median(hits)
        print(f"{'cache hit (' + accel + ')':<52} {hit * 1000:8.2f}ms {'':>10} {'':>7}  <= 10 ms")
        if not opts.no_libvirt:
            cold = libvirt_cold(binary, accel)
            if isinstance(cold, str):
                print(f"{'libvirt embed cold domcapabilities (' + accel + ')':<52} n/a: {cold}")
            else:
                print(f"{'full probe vs libvirt cold domcapabilities (' + accel + ')':<52} {ours * 1000:8.1f}ms "
                      f"{cold * 1000:8.1f}ms {ours / cold:6.2f}x  (reference)")


if __name__ == "__main__":
    main()
