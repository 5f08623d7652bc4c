"""Fleet at scale: add, baseline and where over a synthetic fleet of real CPUs, beside the obvious alternatives.

The fleet: libvirt's corpus of real CPUs (QEMU's host expansion recorded on each, or
libvirt's guest decode for the oldest), seen through this project's recorded QEMU 7.2
under KVM and TCG, with microcode/kernel variations (TSX removed, PKU off); hosts
cycle through those kinds, clustered by vendor.  Pins: the models each kind can run,
on two machine types, pinned from the capabilities (guests share CPU definitions).

Targets (2 cores): ``guestcpu fleet add DIR`` of 10,000 capture files <= 60 s into SQLite
(rich progress bar), ``fleet baseline`` of 10,000 hosts <= 100 ms after load,
``guestcpu fleet where --count`` for 100,000 stored pins over 10,000 hosts <= 10 s; add and
where are timed as whole commands.  Each is printed beside, in the same run:

* add: one transaction and one full document per host (no shared profiles), on a sample;
* baseline: ``baseline_everywhere`` over every host (no profile reduction), on a sample;
* pins: ``add_pin`` one transaction each, on a sample;
* where: ``check_destination`` per (pin, host) pair in a plain Python loop, and libvirt's
  ``compareHypervisorCPU`` (``virsh hypervisor-cpu-compare`` in one virsh session against an
  embedded QEMU driver) per pair, each times the 10^9 pairs.

    .venv/bin/python benchmarks/bench_fleet.py [--hosts N] [--pins N] [--postgresql]

The capture files go to a temporary folder: 720 KB a host, 7.2 GB for 10,000.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from guestcpu.catalog.catalog import Catalog  # noqa: E402
from guestcpu.catalog.loader import load_catalog  # noqa: E402
from guestcpu.fleet import api  # noqa: E402
from guestcpu.fleet.baseline import fleet_baseline, prepare  # noqa: E402
from guestcpu.fleet.corpus import corpus_cpus  # noqa: E402
from guestcpu.fleet.cpu_pin import pin_from_caps  # noqa: E402
from guestcpu.fleet.placement import placement_table  # noqa: E402
from guestcpu.fleet.synthetic import HostKind, capture_document, host_kinds  # noqa: E402
from guestcpu.fleet.view import FleetView, PinView  # noqa: E402
from guestcpu.formats.libvirt_xml import format_cpu  # noqa: E402
from guestcpu.lifecycle.compat import check_destination  # noqa: E402
from guestcpu.lifecycle.pin import Pin  # noqa: E402
from guestcpu.qemu.cache import read_caps_file  # noqa: E402
from guestcpu.qemu.caps import caps_from_document  # noqa: E402
from guestcpu.qemu.hypervisor import baseline_everywhere, host_model  # noqa: E402

DATA = ROOT / "tests" / "data"
PIN_MODELS = ("Westmere-v2", "SandyBridge-v2", "IvyBridge-v2", "Haswell-v4", "Broadwell-v4", "Skylake-Client-v4",
              "Skylake-Server-v5", "Cascadelake-Server-v5", "Icelake-Server-v6", "EPYC-v3", "EPYC-Rome-v2",
              "Opteron_G3-v1", "qemu64-v1")
MACHINES = ("pc-q35-7.2", "pc-i440fx-7.2")
PLACEHOLDER = "@@HOSTNAME@@"


def fleet_kinds(catalog: Catalog) -> list[HostKind]:
    kvm = read_caps_file(str(DATA / "qemu-7.2" / "caps-kvm.json"))
    tcg = read_caps_file(str(DATA / "qemu-7.2" / "caps-tcg.json"))
    cpus = {c.name: c.props for c in corpus_cpus(DATA / "libvirt-11.3" / "cputestdata", catalog)}
    return host_kinds(cpus, kvm, tcg)


def vendor_of(kind: HostKind) -> str:
    props = kind.accels["kvm"]["host_static"]["props"]
    return {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(str(props.get("vendor")), "other")


def capture_inputs(
    kinds: list[HostKind], count: int, prefix: str = "host"
) -> Iterator[tuple[str, bytes, str | None]]:
    """``count`` capture files as a real 'guestcpu capture' writes them (indented JSON), one per host."""
    from guestcpu.lifecycle.documents import document_output

    templates = [str(document_output("-", capture_document(kind, PLACEHOLDER)).data).encode() for kind in kinds]
    for i in range(count):
        name = f"{prefix}{i:05d}"
        yield f"{name}.json", templates[i % len(kinds)].replace(PLACEHOLDER.encode(), name.encode()), None


def clusters_of(kinds: list[HostKind], count: int) -> list[tuple[str, list[HostKind], int]]:
    """(cluster, its kinds, its share of ``count`` hosts): hosts clustered by vendor."""
    clusters: dict[str, list[HostKind]] = {}
    for kind in kinds:
        clusters.setdefault(vendor_of(kind), []).append(kind)
    found, left = [], count
    for n, cluster in enumerate(sorted(clusters)):
        share = left if n == len(clusters) - 1 else count * len(clusters[cluster]) // len(kinds)
        left -= share
        found.append((cluster, clusters[cluster], share))
    return found


#: CPU seconds of the last timed() call (this process): on a machine shared with other work, wall time
#: is inflated by waiting for a core; the CPU time is what the work itself costs
LAST_CPU = [0.0]


def timed(fn, repeat: int = 1):  # type: ignore[no-untyped-def]
    times, cpus, result = [], [], None
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    LAST_CPU[0] = statistics.median(cpus)
    return statistics.median(times), result


def row(label: str, ours: float, theirs: float | None, target: str, unit: str = "s", cpu: float | None = None) -> None:
    scale = 1000.0 if unit == "ms" else 1.0
    other = f"{theirs * scale:14.2f}" if theirs is not None else f"{'':>14}"
    ratio = (f"{ours / theirs:9.4f}x" if ours / theirs >= 1e-3 else f"{ours / theirs:9.1e}x") if theirs else f"{'':>10}"
    spent = f"{cpu * scale:10.2f}" if cpu is not None else f"{'':>10}"
    print(f"{label:<74} {ours * scale:12.2f} {spent} {other} {ratio}  {unit:<2} target {target}")


# -- add ----------------------------------------------------------------------------------
def write_captures(folder: Path, kinds: list[HostKind], count: int) -> dict[str, Path]:
    """The fleet's capture files on disk, one folder per cluster (what 'fleet add DIR' reads)."""
    folders = {}
    for cluster, members, share in clusters_of(kinds, count):
        folders[cluster] = folder / cluster
        folders[cluster].mkdir(parents=True)
        for name, data, _ in capture_inputs(members, share, f"{cluster}-"):
            (folders[cluster] / name).write_bytes(data)
    return folders


def bench_add(url: str, folders: dict[str, Path]) -> float:
    """'guestcpu fleet add DIR --cluster C' per cluster, the command as a whole (its progress bar on a terminal)."""
    seconds = 0.0
    for cluster, folder in folders.items():
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "guestcpu.cli.main", "fleet", "add", str(folder), "--cluster", cluster,
                        "--db", url, "--json"], check=True, stdout=subprocess.DEVNULL, timeout=3600)
        seconds += time.perf_counter() - start
    return seconds


def bench_add_plain(url: str, kinds: list[HostKind], sample: int) -> float:
    """The obvious way: each host its own transaction and its whole document in a row (seconds per host)."""
    from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, create_engine

    engine = create_engine(url)
    meta = MetaData()
    hosts = Table("plain_hosts", meta, Column("id", Integer, primary_key=True), Column("name", String, unique=True),
                  Column("document", JSON))
    meta.create_all(engine)
    start = time.perf_counter()
    for source, data, _ in capture_inputs(kinds, sample):
        doc = json.loads(data)
        with engine.begin() as connection:
            connection.execute(hosts.insert().values(name=source, document=doc))
    seconds = (time.perf_counter() - start) / sample
    meta.drop_all(engine)
    engine.dispose()
    return seconds


# -- baseline -----------------------------------------------------------------------------
def load(url: str, catalog: Catalog) -> tuple[float, FleetView]:
    def run() -> FleetView:
        store = api.open_store(url)
        view = api.load_view(store)
        store.close()
        prepare(view, catalog)  # each profile's facts derived once, as a service keeps them
        return view

    return timed(run)  # type: ignore[no-any-return]


def bench_baseline_plain(view: FleetView, catalog: Catalog, cluster: str, sample: int) -> float:
    """baseline_everywhere over every host (each its own capabilities object): seconds per host."""
    hosts = [h for h in view.in_cluster(cluster).hosts if "kvm" in h.profiles][:sample]
    docs = {d: p.caps for d, p in view.profiles.items()}
    from guestcpu.qemu.caps import to_document

    own = [(h.name, caps_from_document(to_document(docs[h.profiles["kvm"]]))) for h in hosts]
    start = time.perf_counter()
    cpus = [host_model(caps, catalog).cpu for _, caps in own]
    baseline_everywhere(cpus, own, catalog)
    return (time.perf_counter() - start) / len(own)


# -- where --------------------------------------------------------------------------------
def make_pins(kinds: list[HostKind], catalog: Catalog, count: int) -> list[PinView]:
    """Named models as QEMU defines them, and each host kind's host-model (model plus its extra features)."""
    from guestcpu.fleet.cpu_pin import overrides_of

    distinct: dict[str, Pin] = {}
    for kind in kinds:
        caps = caps_from_document(dict(kind.accels["kvm"]))
        decoded = host_model(caps, catalog).cpu
        choices = [(m, {}) for m in PIN_MODELS if (e := caps.model(m)) is not None and e.usable]
        if decoded.model and caps.model(caps.resolve(decoded.model)[0]) is not None:
            choices.append((caps.resolve(decoded.model)[0], overrides_of(decoded, catalog)))
        for model, overrides in choices:
            for machine in MACHINES:
                pin = pin_from_caps(caps, model, overrides, machine, catalog, note=kind.label)
                distinct.setdefault(pin.fingerprint, pin)
    unique = list(distinct.values())
    return [PinView(f"guest{i}", unique[i % len(unique)]) for i in range(count)]


def bench_where(view: FleetView, pins: list[PinView]) -> tuple[float, int, int]:
    counts_per_profile = np.zeros(0, dtype=np.int64)

    def run() -> np.ndarray:  # type: ignore[type-arg]
        nonlocal counts_per_profile
        table = placement_table(view, pins, "migrate")
        column = {d: j for j, d in enumerate(table.digests)}
        counts_per_profile = np.zeros(len(table.digests), dtype=np.int64)
        for host in view.hosts:
            if host.operational and "kvm" in host.profiles:
                counts_per_profile[column[host.profiles["kvm"]]] += 1
        return table.counts(counts_per_profile)

    seconds, counts = timed(run)
    return seconds, int(np.count_nonzero(counts)), int(counts.sum())


def bench_store_pins(url: str, pins: list[PinView]) -> tuple[float, float]:
    """(seconds to store every pin in one call, seconds per pin stored one transaction each, on a sample)."""
    store = api.open_store(url)
    start = time.perf_counter()
    api.add_pins(store, [(p.name, p.pin, None) for p in pins])
    seconds = time.perf_counter() - start
    sample = pins[:200]
    start = time.perf_counter()
    for item in sample:  # stored again, each its own transaction (the pins stay as they were)
        api.add_pin(store, item.name, item.pin)
    one_each = (time.perf_counter() - start) / len(sample)
    store.close()
    return seconds, one_each


def bench_where_command(url: str) -> tuple[float, int]:
    """'guestcpu fleet where --count --json' over every stored pin: the command as a whole, pins read from the db."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "guestcpu.cli.main", "fleet", "where", "--count", "--json",
                           "--db", url], check=True, capture_output=True, timeout=3600)
    seconds = time.perf_counter() - start
    return seconds, len(json.loads(done.stdout)["pins"])


def distinct_pins(pins: list[PinView], count: int) -> list[PinView]:
    """``count`` pins that all differ: each of the shared ones with one more feature of its own turned off."""
    from dataclasses import replace

    found = []
    for i in range(count):
        item = pins[i % len(pins)]
        required = item.pin.abi.required
        name = required[(i // len(pins)) % len(required)]
        abi = replace(item.pin.abi, features={**item.pin.abi.features, name: False},
                      model_id=f"{item.pin.abi.model_id} #{i}")
        found.append(PinView(f"distinct{i}", replace(item.pin, abi=abi)))
    return found


def bench_where_plain(view: FleetView, pins: list[PinView], pairs: int) -> float:
    """check_destination per (pin, host) pair in a plain loop: seconds per pair."""
    hosts = [h for h in view.hosts if "kvm" in h.profiles]
    start = time.perf_counter()
    done = 0
    for item in pins:
        for host in hosts[: max(1, pairs // 20)]:
            check_destination(item.pin, view.caps(host, "kvm"), purpose="migrate", destination=host.name)
            done += 1
        if done >= pairs:
            break
    return (time.perf_counter() - start) / done


def bench_where_libvirt(pin: Pin, catalog: Catalog, calls: int = 300) -> float | str:
    """libvirt's compareHypervisorCPU per pair: virsh hypervisor-cpu-compare in one session (seconds per call)."""
    virsh = shutil.which("virsh")
    if virsh is None:
        return "virsh not installed"
    import bench_probe

    problem = bench_probe._libvirt_qemu_account()
    if problem:
        return problem
    root = Path(tempfile.mkdtemp(prefix="guestcpu-bench-fleet-libvirt-"))
    (root / "etc").mkdir()
    (root / "etc" / "qemu.conf").write_text('user = "root"\ngroup = "root"\nstdio_handler = "file"\n')
    from guestcpu.formats.libvirt_xml import parse_cpu

    guest = root / "guest.xml"
    guest.write_text(format_cpu(parse_cpu(pin.libvirt_cpu.encode(), "pin")))
    uri = f"qemu:///embed?root={root}"
    one = f"hypervisor-cpu-compare {guest} --virttype qemu;"
    try:
        def session(n: int) -> float:
            start = time.perf_counter()
            subprocess.run([virsh, "-c", uri, one * n], capture_output=True, timeout=600, check=False)
            return time.perf_counter() - start

        session(1)  # libvirt probes QEMU once (its cache), as a long-running libvirtd would have
        single = min(session(1) for _ in range(3))
        many = session(calls)
        return max(many - single, 1e-9) / (calls - 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--pins", type=int, default=100_000)
    parser.add_argument("--postgresql", metavar="URL",
                        help="Also run against this PostgreSQL ('auto': a private server, as the tests start one).")
    args = parser.parse_args()
    if args.postgresql == "auto":
        sys.path.insert(0, str(ROOT / "tests"))
        import pg_support

        if pg_support.postgres_bindir() is None:
            print("PostgreSQL is not installed (Debian postgresql); SQLite only")
            args.postgresql = None
        else:
            with pg_support.running_postgres() as server:
                args.postgresql = server.new_database()
                run(args)
            return
    run(args)


def run(args: argparse.Namespace) -> None:
    catalog = load_catalog(dropin_dirs=[])
    kinds = fleet_kinds(catalog)
    print(f"synthetic fleet: {args.hosts} hosts over {len(kinds)} kinds of real CPUs; {args.pins} pins")
    work = Path(tempfile.mkdtemp(prefix="guestcpu-bench-fleet-"))
    urls = [("SQLite", f"sqlite:///{work / 'fleet.db'}")]
    if args.postgresql:
        urls.append(("PostgreSQL", args.postgresql))
    pins = make_pins(kinds, catalog, args.pins)
    distinct = len({p.pin.fingerprint for p in pins})
    import os

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'':<74} {'guestcpu':>12} {'(its CPU)':>10} {'alternative':>14} {'ratio':>10}")
    start = time.perf_counter()
    folders = write_captures(work / "captures", kinds, args.hosts)
    size = sum(p.stat().st_size for f in folders.values() for p in f.iterdir())
    print(f"{args.hosts} capture files written ({size / 1e9:.1f} GB) in {time.perf_counter() - start:.0f} s")
    for label, url in urls:
        add_s = bench_add(url, folders)
        plain = bench_add_plain(url, kinds, 100) * args.hosts
        row(f"[{label}] guestcpu fleet add DIR: {args.hosts} capture files", add_s, plain, "<= 60 s (SQLite)")
        load_s, view = load(url, catalog)
        row(f"[{label}] load the fleet ({len(view.profiles)} profiles)", load_s, None, "-", cpu=LAST_CPU[0])
        for cluster in (None, "intel"):
            hosts = view.in_cluster(cluster).hosts
            base_s, result = timed(lambda c=cluster, v=view: fleet_baseline(v, catalog, cluster=c), repeat=5)
            base_cpu = LAST_CPU[0]
            plain_s = bench_baseline_plain(view, catalog, cluster or "intel", 300) * len(hosts)
            what = f"{len(hosts)} hosts{' (intel)' if cluster else ' (all)'}"
            row(f"[{label}] fleet baseline of {what} -> {result.level or result.model}", base_s, plain_s,
                "<= 100 ms", "ms", cpu=base_cpu)
        store_s, plain_pin = bench_store_pins(url, pins)
        row(f"[{label}] store {len(pins)} pins (api.add_pins)", store_s, plain_pin * len(pins), "-")
        command_s, stored = bench_where_command(url)
        per_pair = bench_where_plain(view, pins, 4000)
        row(f"[{label}] guestcpu fleet where --count: {stored} stored pins x {len(view.hosts)} hosts", command_s,
            per_pair * stored * len(view.hosts), "<= 10 s")
        where_s, placed, total = bench_where(view, pins)
        where_cpu = LAST_CPU[0]
        pairs = len(pins) * len(view.hosts)
        row(f"[{label}] fleet where after load: {len(pins)} pins ({distinct} distinct) x {len(view.hosts)} hosts",
            where_s, per_pair * pairs, "-", cpu=where_cpu)
        unique = distinct_pins(pins, 5000)
        distinct_s, _, _ = bench_where(view, unique)
        row(f"[{label}] fleet where: 5000 distinct pins x {len(view.hosts)} hosts", distinct_s,
            per_pair * len(unique) * len(view.hosts), "-", cpu=LAST_CPU[0])
        if label == "SQLite":
            libvirt = bench_where_libvirt(pins[0].pin, catalog)
            if isinstance(libvirt, float):
                row(f"  vs libvirt compareHypervisorCPU x {pairs:.0e} pairs ({libvirt * 1e3:.2f} ms/call)", where_s,
                    libvirt * pairs, "reference")
            else:
                print(f"  libvirt compareHypervisorCPU: n/a ({libvirt})")
        print(f"  {placed} of {len(pins)} pins have somewhere to go; {total} (pin, host) placements in all")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
