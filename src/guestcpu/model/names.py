"""The model-version grammar, defined once: ``NAME-vN`` is version N of model NAME.

QEMU and libvirt both name model versions this way (``Skylake-Client-v4``); the bare
name is an alias whose meaning depends on the machine type.  Named variants
(``-noTSX``, ``-IBRS``) are part of NAME, not versions.
"""

from __future__ import annotations

import re

_VERSIONED = re.compile(r"^(?P<base>.+)-v(?P<version>\d+)$")


def split_version(name: str) -> tuple[str, int | None]:
    """``Skylake-Client-v4`` -> ``("Skylake-Client", 4)``; an unversioned name -> ``(name, None)``."""
    match = _VERSIONED.match(name)
    if match is None:
        return name, None
    return match["base"], int(match["version"])


def version_of(name: str) -> int | None:
    return split_version(name)[1]


def base_of(name: str) -> str:
    return split_version(name)[0]


def versioned(base: str, version: int) -> str:
    return f"{base}-v{version}"
