"""Which CPU features need another one (QEMU's ``feature_dependencies``), as catalog bits.

QEMU silently turns a feature off when the feature it depends on is off: ``npt`` and
the other SVM features need ``svm``, the IA32_ARCH_CAPABILITIES bits (``rdctl-no`` …)
need ``arch-capabilities``, every ``vmx-*`` control needs ``vmx``.  A CPU that
requires a child without its parent therefore never starts as asked, so a baseline
leaves such children out.  The table is data (``data/feature-dependencies.json``,
measured from QEMU itself); names the catalog does not know are skipped.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from guestcpu.model.features import iter_bits

if TYPE_CHECKING:
    from guestcpu.catalog.catalog import Catalog

_DATA = Path(__file__).parent / "data" / "feature-dependencies.json"


@functools.cache
def _table() -> tuple[tuple[str, tuple[str, ...]], ...]:
    doc = json.loads(_DATA.read_text())
    return tuple((parent, tuple(children)) for parent, children in sorted(doc["requires"].items()))


@dataclass(frozen=True)
class FeatureDependencies:
    """child bit -> the bits of every feature it needs."""

    needs: tuple[tuple[int, int], ...]

    def orphans(self, bits: int) -> int:
        """Features in ``bits`` that lack a feature they need (one step)."""
        found = 0
        for child, parents in self.needs:
            if bits & child and (bits & parents) != parents:
                found |= child
        return found

    def without_orphans(self, bits: int) -> int:
        """``bits`` with every feature whose parent is missing removed, transitively."""
        while True:
            orphans = self.orphans(bits)
            if not orphans:
                return bits
            bits &= ~orphans

    def explain(self, orphans: int, kept: int, catalog: Catalog) -> list[str]:
        """``["npt (needs svm)", ...]``: what each of ``orphans`` needs that ``kept`` lacks."""
        lines = []
        by_child = dict(self.needs)
        for index in iter_bits(orphans):
            child = 1 << index
            missing = by_child.get(child, 0) & ~kept
            lines.append(f"{catalog.features[index].name} (needs {', '.join(catalog.names(missing))})")
        return lines


@functools.cache
def _parents() -> dict[str, tuple[str, ...]]:
    """QEMU feature name -> every feature it needs (QEMU spellings)."""
    found: dict[str, list[str]] = {}
    for parent, children in _table():
        for child in children:
            found.setdefault(child, []).append(parent)
    return {child: tuple(parents) for child, parents in found.items()}


def nearest_parent(names: Iterable[str]) -> str | None:
    """The feature that one of ``names`` (a feature's spellings) needs first: its closest gate.

    ``vmx-ept-2mb`` needs vmx, vmx-secondary-ctls and vmx-ept; the closest is the one that
    itself needs the most (vmx-ept).  None: the feature needs nothing.
    """
    parents = _parents()
    for name in names:
        found = parents.get(name)
        if found:
            return max(found, key=lambda p: (len(parents.get(p, ())), p))
    return None


def dependencies_for(catalog: Catalog) -> FeatureDependencies:
    needs: dict[int, int] = {}
    for parent, children in _table():
        if not catalog.has_feature(parent):
            continue
        parent_bit = 1 << catalog.feature(parent).index
        for child in children:
            if catalog.has_feature(child):
                bit = 1 << catalog.feature(child).index
                needs[bit] = needs.get(bit, 0) | parent_bit
    return FeatureDependencies(tuple(sorted(needs.items())))
