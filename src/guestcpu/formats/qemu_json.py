"""QEMU's QMP JSON replies about CPUs, turned into catalog terms.

The replies are parsed (and their shape checked) once, in ``qmp_replies``; this module
maps what they say onto the catalog:

* ``query-cpu-model-expansion`` -> the features it turns on (catalog names), vendor,
  family/model/stepping, and the properties the catalog has no name for (kept and
  reported, never silently dropped);
* ``query-cpu-definitions`` -> model name -> blockers (``unavailable-features``, in
  catalog spelling, de-duplicated), plus ``alias-of`` and ``deprecated``.

libvirt's test corpus stores several replies concatenated in one file; ``split_replies``
reads that form too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from guestcpu.errors import InputError
from guestcpu.formats.qmp_replies import parse_definitions, parse_expansion
from guestcpu.model.cpuid import Signature

if TYPE_CHECKING:  # the catalog is passed in; formats never import the layers above them
    from guestcpu.catalog.catalog import Catalog

#: Expansion properties that are not CPUID feature bits.
NON_FEATURE_PROPS = frozenset(
    {
        "family", "model", "stepping", "vendor", "model-id", "level", "xlevel", "xlevel2", "min-level",
        "min-xlevel", "min-xlevel2", "phys-bits", "host-phys-bits", "host-phys-bits-limit", "tsc-frequency",
        "apic-id", "core-id", "socket-id", "thread-id", "die-id", "cluster-id", "node-id", "hv-vendor-id",
        "hv-spinlocks", "hv-version-id-build", "hv-version-id-major", "hv-version-id-minor",
        "hv-version-id-spack", "hv-version-id-sbranch", "hv-version-id-snumber", "ucode-rev",
        "lbr-fmt", "sgx-debug", "sgx-provisionkey", "sgx-tokenkey",
    }
)


@dataclass(frozen=True)
class ExpandedCpu:
    """A model expansion: enabled catalog features and the CPU's identity."""

    model_name: str
    features: int
    vendor_string: str | None
    family: int | None
    model: int | None
    stepping: int | None
    model_id: str | None
    #: boolean properties that were true but have no catalog feature
    unknown_true: tuple[str, ...] = ()
    #: catalog features that were explicitly false
    disabled: int = 0
    props: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def signature_eax(self) -> int:
        if self.family is None or self.model is None:
            return 0
        return Signature(self.family, self.model, self.stepping or 0).to_eax()


@dataclass(frozen=True)
class CpuDefinitionInfo:
    name: str
    blockers: tuple[str, ...]
    alias_of: str | None
    deprecated: bool
    typename: str | None = None
    #: unavailable features QEMU named that the catalog does not know
    unknown_blockers: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return not self.blockers and not self.unknown_blockers


def split_replies(text: str, source: str) -> list[dict[str, Any]]:
    """Every JSON object in ``text`` (one reply, or several written one after another)."""
    decoder = json.JSONDecoder()
    replies: list[dict[str, Any]] = []
    pos = 0
    text = text.strip()
    if not text:
        raise InputError(f"{source} is empty; expected QMP JSON replies")
    while pos < len(text):
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
        if not isinstance(obj, dict):
            raise InputError(f"{source}: expected a QMP reply object, found {type(obj).__name__}")
        replies.append(obj)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return replies


def expansion_from_reply(reply: dict[str, Any], catalog: Catalog, source: str = "QMP reply") -> ExpandedCpu:
    """A ``query-cpu-model-expansion`` reply (``qmp_replies.parse_expansion``) in catalog terms."""
    model = parse_expansion(reply)
    return expansion_from_props(model.name, model.props, catalog)


def expansion_from_props(name: str, props: Mapping[str, Any], catalog: Catalog) -> ExpandedCpu:
    enabled = 0
    disabled = 0
    unknown: set[str] = set()
    for key, value in props.items():
        if not isinstance(value, bool) or key in NON_FEATURE_PROPS:
            continue
        if catalog.has_feature(key):
            bit = 1 << catalog.feature(key).index
            if value:
                enabled |= bit
            else:
                disabled |= bit
        elif value:
            unknown.add(key)
    return ExpandedCpu(
        model_name=name,
        features=enabled,
        vendor_string=props.get("vendor") if isinstance(props.get("vendor"), str) else None,
        family=props.get("family") if isinstance(props.get("family"), int) else None,
        model=props.get("model") if isinstance(props.get("model"), int) else None,
        stepping=props.get("stepping") if isinstance(props.get("stepping"), int) else None,
        model_id=props.get("model-id") if isinstance(props.get("model-id"), str) else None,
        unknown_true=tuple(sorted(unknown)),
        disabled=disabled & ~enabled,
        props=dict(props),
    )


def _catalog_names(names: Iterable[str], catalog: Catalog) -> tuple[tuple[str, ...], tuple[str, ...]]:
    known: list[str] = []
    unknown: list[str] = []
    for name in names:
        if catalog.has_feature(name):
            canonical = catalog.feature(name).name
            if canonical not in known:
                known.append(canonical)
        elif name not in unknown:
            unknown.append(name)
    return tuple(known), tuple(unknown)


def definitions_from_reply(
    reply: dict[str, Any], catalog: Catalog, source: str = "QMP reply"
) -> list[CpuDefinitionInfo]:
    """A ``query-cpu-definitions`` reply (``qmp_replies.parse_definitions``) in catalog spelling."""
    result = []
    for entry in parse_definitions(reply):
        blockers, unknown = _catalog_names(entry.unavailable, catalog)
        result.append(
            CpuDefinitionInfo(
                name=entry.name,
                blockers=blockers,
                alias_of=entry.alias_of,
                deprecated=entry.deprecated,
                typename=entry.typename,
                unknown_blockers=unknown,
            )
        )
    return result


def models_with_blockers(definitions: Iterable[CpuDefinitionInfo]) -> dict[str, tuple[str, ...]]:
    """The ``models`` argument of decode/baseline: name -> blockers."""
    return {d.name: d.blockers for d in definitions}
