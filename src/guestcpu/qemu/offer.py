"""What one QEMU binary under one accelerator can give a guest, as a set of feature names (pure).

The static expansion of ``host`` (KVM) or ``max`` (TCG) is most of the answer, but not
all of it: under KVM QEMU always grants ``topoext`` although ``host`` does not show it,
and ``invtsc`` only appears with ``migratable=off``.  QEMU's own verdict per model
(``unavailable-features`` of ``query-cpu-definitions``) is authoritative, so every
feature some model asks for without QEMU blocking it counts as supported too.  On this
host's QEMU 7.2 that union equals QEMU's blockers for all 132 models under both
accelerators (tests/test_lifecycle_checks.py, tests/test_qemu_live.py).
"""

from __future__ import annotations

from functools import cache

from guestcpu.qemu.caps import QemuCaps

#: QEMU models whose expansion is what the accelerator offers, not a CPU definition.
HOST_MODELS = frozenset({"host", "max"})
#: QEMU features that block live migration whatever the host (QEMU's unmigratable_flags).
ALWAYS_NON_MIGRATABLE = frozenset({"invtsc"})


@cache
def _gates() -> dict[str, str]:
    """QEMU property -> the property of its gate, from the catalog's gate rules (``catalog.gates``)."""
    from guestcpu.catalog.gates import gate_of
    from guestcpu.catalog.loader import load_catalog

    catalog = load_catalog(dropin_dirs=[])
    gates: dict[str, str] = {}
    for feature in catalog.features:
        gate = gate_of(feature)
        if gate is not None and catalog.has_feature(gate):
            for name in (feature.name, *feature.qemu_names):
                gates[name] = catalog.feature(gate).qemu_name
    return gates


def _given(enabled: set[str]) -> set[str]:
    """``enabled`` without the features whose gate is not enabled too.

    QEMU clears a feature whose gate is off without listing it among a model's
    unavailable features (QEMU 10's YongFeng-v2 under TCG: ``arch-capabilities``
    blocked, ``rdctl-no`` not), so a dependent counts as offered through a model only
    when its gate does too.
    """
    gates = _gates()
    return {name for name in enabled if (gate := gates.get(name)) is None or gate in enabled}


def supported_features(caps: QemuCaps) -> frozenset[str]:
    """QEMU property names of every feature ``caps``' accelerator can give a guest."""
    cached: frozenset[str] | None = caps.memo.get("supported_features")
    if cached is not None:
        return cached
    found: set[str] = set(caps.host_static.enabled) if caps.host_static else set()
    found |= set(caps.non_migratable)
    for model in caps.models:
        # host and max stand for the host expansion itself (already counted above).
        if model.expansion is not None and model.name not in HOST_MODELS:
            found |= _given(set(model.expansion.enabled) - set(model.blockers))
    result = caps.memo["supported_features"] = frozenset(found)
    return result


def non_migratable_features(caps: QemuCaps) -> frozenset[str]:
    return frozenset(caps.non_migratable) | ALWAYS_NON_MIGRATABLE


def known_features(caps: QemuCaps) -> frozenset[str]:
    """Every feature property this QEMU knows (true or false in its static expansions)."""
    known = set(caps.known_props)
    for model in caps.models:
        if model.expansion is not None:
            known |= set(model.expansion.enabled)
    return frozenset(known)
