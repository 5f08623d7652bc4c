"""QEMU's QMP replies, each parsed once into an immutable value checked on arrival (pure).

Every reply guestcpu reads goes through one function here, the way ``qemu.qmp``'s
``Greeting`` checks its members: a reply of the wrong shape (``{"return": "x"}``, a
definition without a ``name``, a list where an object belongs) raises one
``ReplyError`` that names the command and the field, never a ``KeyError`` further on.
The rest of guestcpu uses these classes, never the raw JSON.

The functions take a reply's ``return`` value (what ``qemu.qmp`` hands back) or, for
recorded replies, the whole ``{"return": ...}`` object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from guestcpu.errors import InputError

#: Values a CPU property can have in an expansion (QEMU's scalars).
Scalar = bool | int | float | str


class ReplyError(InputError):
    """A QMP reply that does not have the shape of its command's answer."""

    def __init__(self, command: str, where: str, expected: str, found: Any) -> None:
        self.command = command
        self.where = where
        place = f" at {where}" if where else ""
        super().__init__(f"QEMU's {command} reply is malformed{place}: expected {expected}, found {describe(found)}")


#: stands for a member that is not there at all
MISSING: Any = object()


def describe(value: Any) -> str:
    """A short, type-naming description of a JSON value (for error messages)."""
    if value is MISSING:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def unwrap(reply: Any) -> Any:
    """The ``return`` value of a recorded ``{"return": ..., "id": ...}`` reply; anything else as it is."""
    if isinstance(reply, dict) and "return" in reply and set(reply) <= {"return", "id"}:
        return reply["return"]
    return reply


class _Reader:
    """Typed access to one reply's members, with the command and path for errors."""

    def __init__(self, command: str) -> None:
        self.command = command

    def obj(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise ReplyError(self.command, where, "an object", value)
        return value

    def seq(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise ReplyError(self.command, where, "a list", value)
        return value

    def text(self, parent: Mapping[str, Any], key: str, where: str) -> str:
        if key not in parent:
            raise ReplyError(self.command, _join(where, key), "a string", MISSING)
        value = parent[key]
        if not isinstance(value, str):
            raise ReplyError(self.command, _join(where, key), "a string", value)
        return value

    def opt_text(self, parent: Mapping[str, Any], key: str, where: str) -> str | None:
        value = parent.get(key)
        if value is not None and not isinstance(value, str):
            raise ReplyError(self.command, _join(where, key), "a string", value)
        return value

    def number(self, parent: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
        value = parent.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ReplyError(self.command, _join(where, key), "an integer", value if key in parent else MISSING)
        return value

    def opt_number(self, parent: Mapping[str, Any], key: str, where: str) -> int | None:
        value = parent.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ReplyError(self.command, _join(where, key), "an integer", value)
        return value

    def flag(self, parent: Mapping[str, Any], key: str, where: str, default: bool = False) -> bool:
        value = parent.get(key, default)
        if not isinstance(value, bool):
            raise ReplyError(self.command, _join(where, key), "true or false", value)
        return value

    def names(self, parent: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        """A list of strings, de-duplicated in order (QEMU repeats some feature names)."""
        values = self.seq(parent.get(key, []), _join(where, key))
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise ReplyError(self.command, f"{_join(where, key)}[{index}]", "a string", value)
        return tuple(dict.fromkeys(values))

    def props(self, value: Any, where: str) -> Mapping[str, Scalar]:
        found = self.obj(value, where)
        for key, prop in found.items():
            if not isinstance(prop, (bool, int, float, str)):
                raise ReplyError(self.command, _join(where, key), "a boolean, number or string", prop)
        return MappingProxyType(dict(found))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# -- query-version ------------------------------------------------------------------
@dataclass(frozen=True)
class QemuVersion:
    major: int
    minor: int
    micro: int
    package: str = ""

    @property
    def text(self) -> str:
        return f"{self.major}.{self.minor}.{self.micro}"


def parse_version(reply: Any) -> QemuVersion:
    read = _Reader("query-version")
    body = read.obj(unwrap(reply), "")
    qemu = read.obj(body.get("qemu"), "qemu")
    package = body.get("package", "")
    if not isinstance(package, str):
        raise ReplyError("query-version", "package", "a string", package)
    return QemuVersion(
        read.number(qemu, "major", "qemu"), read.number(qemu, "minor", "qemu"), read.number(qemu, "micro", "qemu"),
        package,
    )


# -- query-target -------------------------------------------------------------------
def parse_target(reply: Any) -> str:
    """The binary's target architecture (``x86_64``, ``s390x``)."""
    read = _Reader("query-target")
    return read.text(read.obj(unwrap(reply), ""), "arch", "")


# -- query-machines -----------------------------------------------------------------
@dataclass(frozen=True)
class MachineInfo:
    name: str
    alias: str | None = None
    is_default: bool = False
    default_cpu_type: str | None = None
    deprecated: bool = False
    cpu_max: int | None = None


def parse_machines(reply: Any) -> tuple[MachineInfo, ...]:
    read = _Reader("query-machines")
    machines = []
    for index, raw in enumerate(read.seq(unwrap(reply), "")):
        where = f"[{index}]"
        entry = read.obj(raw, where)
        machines.append(
            MachineInfo(
                name=read.text(entry, "name", where),
                alias=read.opt_text(entry, "alias", where),
                is_default=read.flag(entry, "is-default", where),
                default_cpu_type=read.opt_text(entry, "default-cpu-type", where),
                deprecated=read.flag(entry, "deprecated", where),
                cpu_max=read.opt_number(entry, "cpu-max", where),
            )
        )
    return tuple(machines)


# -- query-cpu-definitions ----------------------------------------------------------
@dataclass(frozen=True)
class CpuDefinition:
    name: str
    #: ``unavailable-features`` (QEMU's spelling, de-duplicated, QEMU's order)
    unavailable: tuple[str, ...] = ()
    typename: str | None = None
    alias_of: str | None = None
    deprecated: bool = False
    static: bool = False
    migration_safe: bool = True

    @property
    def usable(self) -> bool:
        return not self.unavailable


def parse_definitions(reply: Any) -> tuple[CpuDefinition, ...]:
    read = _Reader("query-cpu-definitions")
    definitions = []
    for index, raw in enumerate(read.seq(unwrap(reply), "")):
        where = f"[{index}]"
        entry = read.obj(raw, where)
        definitions.append(
            CpuDefinition(
                name=read.text(entry, "name", where),
                unavailable=read.names(entry, "unavailable-features", where),
                typename=read.opt_text(entry, "typename", where),
                alias_of=read.opt_text(entry, "alias-of", where),
                deprecated=read.flag(entry, "deprecated", where),
                static=read.flag(entry, "static", where),
                migration_safe=read.flag(entry, "migration-safe", where, default=True),
            )
        )
    return tuple(definitions)


# -- query-cpu-model-expansion / -baseline ------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """A CPU model as QMP writes it: a name and its properties (an expansion or a baseline)."""

    name: str
    props: Mapping[str, Scalar] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def enabled(self) -> list[str]:
        return [key for key, value in self.props.items() if value is True]

    def to_qmp(self) -> dict[str, Any]:
        model: dict[str, Any] = {"name": self.name}
        if self.props:
            model["props"] = dict(self.props)
        return model


def parse_expansion(reply: Any, command: str = "query-cpu-model-expansion") -> ModelInfo:
    """``query-cpu-model-expansion`` (also ``query-cpu-model-baseline``): ``{"model": {name, props}}``."""
    read = _Reader(command)
    body = read.obj(unwrap(reply), "")
    model = read.obj(body.get("model"), "model")
    return ModelInfo(read.text(model, "name", "model"), read.props(model.get("props", {}), "model.props"))


def parse_baseline(reply: Any) -> ModelInfo:
    return parse_expansion(reply, "query-cpu-model-baseline")


# -- query-cpu-model-comparison (s390x) ---------------------------------------------
COMPARISON_RESULTS = ("identical", "superset", "subset", "incompatible")


@dataclass(frozen=True)
class ModelComparison:
    #: identical, superset, subset or incompatible: model A relative to model B
    result: str
    responsible_properties: tuple[str, ...] = ()


def parse_comparison(reply: Any) -> ModelComparison:
    read = _Reader("query-cpu-model-comparison")
    body = read.obj(unwrap(reply), "")
    result = body.get("result")
    if result not in COMPARISON_RESULTS:
        raise ReplyError(read.command, "result", f"one of {', '.join(COMPARISON_RESULTS)}", result)
    return ModelComparison(result, read.names(body, "responsible-properties", ""))


# -- query-cpus-fast ----------------------------------------------------------------
@dataclass(frozen=True)
class VcpuInfo:
    cpu_index: int
    qom_path: str
    target: str | None = None


def parse_cpus_fast(reply: Any) -> tuple[VcpuInfo, ...]:
    read = _Reader("query-cpus-fast")
    cpus = []
    for index, raw in enumerate(read.seq(unwrap(reply), "")):
        where = f"[{index}]"
        entry = read.obj(raw, where)
        cpus.append(
            VcpuInfo(
                cpu_index=read.number(entry, "cpu-index", where),
                qom_path=read.text(entry, "qom-path", where),
                target=read.opt_text(entry, "target", where),
            )
        )
    return tuple(cpus)


# -- qom-list-properties / qom-list -------------------------------------------------
@dataclass(frozen=True)
class ObjectProperty:
    name: str
    type: str


def parse_properties(reply: Any, command: str = "qom-list-properties") -> tuple[ObjectProperty, ...]:
    read = _Reader(command)
    found = []
    for index, raw in enumerate(read.seq(unwrap(reply), "")):
        where = f"[{index}]"
        entry = read.obj(raw, where)
        found.append(ObjectProperty(read.text(entry, "name", where), read.text(entry, "type", where)))
    return tuple(found)


# -- qom-get ------------------------------------------------------------------------
def _qom(prop: str) -> str:
    return f"qom-get {prop}"


def qom_bool(reply: Any, prop: str) -> bool:
    value = unwrap(reply)
    if not isinstance(value, bool):
        raise ReplyError(_qom(prop), "", "true or false", value)
    return value


def qom_int(reply: Any, prop: str) -> int:
    value = unwrap(reply)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ReplyError(_qom(prop), "", "an integer", value)
    return value


def qom_str(reply: Any, prop: str) -> str:
    value = unwrap(reply)
    if not isinstance(value, str):
        raise ReplyError(_qom(prop), "", "a string", value)
    return value


def qom_scalar(reply: Any, prop: str) -> Scalar:
    value = unwrap(reply)
    if not isinstance(value, (bool, int, float, str)):
        raise ReplyError(_qom(prop), "", "a boolean, number or string", value)
    return value


def qom_names(reply: Any, prop: str) -> tuple[str, ...]:
    """A string-list property (``unavailable-features``); null reads as empty."""
    value = unwrap(reply)
    if value is None:
        return ()
    return _Reader(_qom(prop)).names({"value": value}, "value", "")


@dataclass(frozen=True)
class FeatureWord:
    """One entry of an x86 vCPU's ``feature-words`` / ``filtered-features``."""

    eax: int
    ecx: int | None
    register: str
    features: int


_REGISTERS = ("EAX", "EBX", "ECX", "EDX")


def qom_feature_words(reply: Any, prop: str) -> tuple[FeatureWord, ...]:
    read = _Reader(_qom(prop))
    words = []
    for index, raw in enumerate(read.seq(unwrap(reply), "")):
        where = f"[{index}]"
        entry = read.obj(raw, where)
        register = read.text(entry, "cpuid-register", where)
        if register not in _REGISTERS:
            raise ReplyError(read.command, _join(where, "cpuid-register"), "EAX, EBX, ECX or EDX", register)
        words.append(
            FeatureWord(
                eax=read.number(entry, "cpuid-input-eax", where),
                ecx=read.opt_number(entry, "cpuid-input-ecx", where),
                register=register,
                features=read.number(entry, "features", where),
            )
        )
    return tuple(words)


# -- query-status / query-migrate ---------------------------------------------------
def parse_status(reply: Any) -> str:
    read = _Reader("query-status")
    return read.text(read.obj(unwrap(reply), ""), "status", "")


@dataclass(frozen=True)
class MigrationStatus:
    status: str
    error: str | None = None
    downtime_ms: int | None = None
    total_ms: int | None = None
    transferred_bytes: int | None = None


def parse_migration(reply: Any) -> MigrationStatus:
    read = _Reader("query-migrate")
    body = read.obj(unwrap(reply), "")
    status = body.get("status", "none")
    if not isinstance(status, str):
        raise ReplyError(read.command, "status", "a string", status)
    return MigrationStatus(
        status=status,
        error=read.opt_text(body, "error-desc", ""),
        downtime_ms=read.opt_number(body, "downtime", ""),
        total_ms=read.opt_number(body, "total-time", ""),
        transferred_bytes=read.opt_number(read.obj(body.get("ram", {}), "ram"), "transferred", "ram"),
    )
