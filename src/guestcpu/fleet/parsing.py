"""Host records from many input files, on every core: what a large ``fleet add`` waits for.

Reading a capture is parsing some 700 KB of JSON and hashing its QEMU offers, 4 ms of
one core each; the database takes far less.  So on a machine with cores to spare a
large add parses in worker processes and the caller writes what they send back, in
input order.  A worker sends an offer's
document only the first time it meets that offer (a fleet has a few kinds of hosts)
and its digest after that; ``records`` puts the document back, so the caller sees
the same records a serial read gives.  Workers are spawned, not forked: the caller
may run threads (a progress bar), and a fork would copy their locks; so a script that
passes ``workers`` to ``api.add_hosts`` needs the ``if __name__ == "__main__"`` guard
any multiprocessing program needs.
"""

from __future__ import annotations

import collections
import gc
import itertools
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import GuestCpuError, InputError
from guestcpu.fleet.inputs import HostRecord, record_from_bytes

#: below this many inputs, starting workers costs more than it saves
PARALLEL_FROM = 400
#: beyond this many, the caller (one core) is what everything waits for
MAX_WORKERS = 8
#: inputs a worker takes at a time (fewer round trips; order is kept)
CHUNK = 8
#: chunks in flight per worker: enough to keep it busy, few enough that the files read ahead stay small
AHEAD = 4

HostInput = tuple[str, bytes, str | None]

#: per worker process: the catalog, and the digests whose documents the caller has
_catalog: Catalog | None = None
_sent: dict[str, None] = {}


def worker_count(inputs: int) -> int:
    """How many workers to parse ``inputs`` files with (0: parse in the caller).

    The caller writes the database and puts documents back (a quarter of the work), so
    workers pay only from four cores: measured on two, the caller and two workers took
    longer than the caller alone (docs/performance.md).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores - 1, MAX_WORKERS) if inputs >= PARALLEL_FROM and cores >= 4 else 0


def _start(catalog: Catalog, known: frozenset[str]) -> None:
    global _catalog, _sent
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle; it ends the pool
    gc.disable()  # parsed documents have no cycles (see api.gc_paused): the collector would only cost time
    _catalog, _sent = catalog, dict.fromkeys(known)


def _parse_chunk(items: list[HostInput]) -> list[HostRecord | str]:
    return [_parse(item) for item in items]


def _parse(item: HostInput) -> HostRecord | str:
    source, data, name = item
    assert _catalog is not None
    try:
        record = record_from_bytes(data, source, _catalog, name=name, known_digests=_sent)
    except GuestCpuError as exc:
        # sent back as text: an error class with its own constructor arguments would not unpickle
        return str(exc)
    profiles = {}
    for accel, profile in record.profiles.items():
        if profile.digest in _sent:
            profile = replace(profile, document={})
        _sent[profile.digest] = None
        profiles[accel] = profile
    return replace(record, profiles=profiles)


def records(
    inputs: Iterable[HostInput], catalog: Catalog, known: Iterable[str], workers: int,
    stored: Callable[[str], Mapping[str, Any]],
) -> Iterator[HostRecord]:
    """``record_from_bytes`` of each input, in order, parsed by ``workers`` processes.

    ``known``: digests already checked (their documents are never sent); ``stored``: the
    document of one of those, when a record needs it back.
    """
    documents: dict[str, Mapping[str, Any]] = {}
    items = iter(inputs)
    chunks = iter(lambda: list(itertools.islice(items, CHUNK)), [])
    # concurrent.futures, not multiprocessing.Pool: a worker that dies (killed, out of memory) is an
    # error here, where the Pool would wait for its answer forever
    with ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), _start,
                             (catalog, frozenset(known))) as pool:
        pending: collections.deque[Future[list[HostRecord | str]]] = collections.deque(
            pool.submit(_parse_chunk, chunk) for chunk in itertools.islice(chunks, workers * AHEAD))
        while pending:
            try:
                done = pending.popleft().result()
            except BrokenProcessPool:
                raise GuestCpuError("a process reading the host files ended without an answer (killed, or out "
                                    "of memory?); nothing was added") from None
            pending.extend(pool.submit(_parse_chunk, chunk) for chunk in itertools.islice(chunks, 1))
            for result in done:
                if isinstance(result, str):
                    raise InputError(result)
                yield sharing_documents(result, documents, stored)


def sharing_documents(
    record: HostRecord, documents: dict[str, Mapping[str, Any]], stored: Callable[[str], Mapping[str, Any]],
) -> HostRecord:
    """``record`` with each profile's document the one object every record of that offer shares.

    A document a worker sent before (or the store has) is put back where it was left out;
    a serial read's own copy of a document already met is let go, so a batch of records
    holds each distinct offer once, not once per host.
    """
    profiles = {}
    for accel, profile in record.profiles.items():
        document = documents.setdefault(profile.digest, profile.document) if profile.document else (
            documents.get(profile.digest) or stored(profile.digest))
        profiles[accel] = profile if document is profile.document else replace(profile, document=document)
    return replace(record, profiles=profiles)
