"""Ask QEMU what a CPU model means on one machine type (what ``define`` pins).

A capabilities probe runs ``-machine none``, but a machine type's compatibility
properties change models: QEMU 7.2's ``EPYC`` on ``pc-i440fx-2.12`` loses topoext,
npt and nrip-save and uses the legacy cache layout, and whether an unversioned name
means v1, the latest or the legacy definition also depends on the machine type.  So
the pin is computed in a (paused, device-less) QEMU started with the guest's own
``-machine``: its ``query-cpu-definitions`` tells how names resolve there, and its
``query-cpu-model-expansion`` gives the features and properties the guest will see.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from guestcpu.errors import InputError
from guestcpu.formats.qmp_replies import parse_definitions, parse_expansion
from guestcpu.qemu.process import DEFAULT_TIMEOUT, QemuProcess, QmpCommandError, base_args


@dataclass(frozen=True)
class Expanded:
    """Static and full ``query-cpu-model-expansion`` props of one model on one machine type."""

    model: str
    static: Mapping[str, Any]
    full: Mapping[str, Any]


class MachineSession:
    """A paused QEMU with the guest's machine type and accelerator, for questions only."""

    def __init__(self, binary: str, accel: str, machine: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.machine = machine
        self._qemu = QemuProcess(binary, [*base_args(machine, accel), "-S"], timeout=timeout, name=f"machine-{machine}")

    async def __aenter__(self) -> MachineSession:
        await self._qemu.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._qemu.__aexit__(exc_type, exc, tb)

    async def aliases(self) -> dict[str, str | None]:
        """Model name -> ``alias-of`` on this machine type (None: not an alias here)."""
        definitions = parse_definitions(await self._qemu.execute("query-cpu-definitions"))
        return {d.name: d.alias_of for d in definitions}

    async def expand(self, model: str, props: Mapping[str, Any] | None = None) -> Expanded:
        """The static and full expansions of ``model`` with ``props`` applied, on this machine type."""
        spec: dict[str, Any] = {"name": model}
        if props:
            spec["props"] = dict(props)
        try:
            static, full = await self._qemu.execute_many(
                [
                    ("query-cpu-model-expansion", {"type": "static", "model": spec}),
                    ("query-cpu-model-expansion", {"type": "full", "model": spec}),
                ]
            )
        except QmpCommandError as exc:
            raise InputError(f"QEMU cannot expand CPU model {model} on {self.machine}: {exc.desc}") from None
        return Expanded(model, dict(parse_expansion(static).props), dict(parse_expansion(full).props))
