"""Helpers shared by the CLI commands: catalog loading, input files, JSON output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.decorators import FC

from guestcpu.catalog.catalog import Catalog

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")

# Options shared by every command that talks to QEMU.


def qemu_option_as(param: str) -> Callable[[FC], FC]:
    """The one ``--qemu PATH`` option (``GUESTCPU_QEMU`` when absent), passed as ``param``."""
    return click.option(
        "--qemu", param, metavar="PATH", envvar="GUESTCPU_QEMU",
        help="QEMU binary (default: qemu-system-<arch> on PATH; env GUESTCPU_QEMU).",
    )


qemu_option = qemu_option_as("qemu")
accel_option = click.option(
    "--accel", type=click.Choice(["kvm", "tcg"]), default=None,
    help="Accelerator (default: kvm when /dev/kvm is usable, else tcg).",
)
caps_option = click.option(
    "--caps", "caps_file", metavar="FILE",
    help="Use a captured capabilities document ('guestcpu caps --document') instead of probing.",
)
machine_option = click.option(
    "--machine", metavar="TYPE", help="Machine type (default: the guest XML's, else QEMU's default, pc).",
)


def load_catalog_for(ctx: click.Context) -> Catalog:
    from guestcpu.catalog.cache import load_catalog_cached

    obj = ctx.find_root().obj or {}
    libvirt_dir = obj.get("catalog_libvirt")
    dirs = obj.get("models_dirs")
    return load_catalog_cached(
        libvirt_dir=Path(libvirt_dir) if libvirt_dir else None,
        dropin_dirs=[Path(d) for d in dirs] if dirs else None,
    )


def read_input(path: str) -> bytes:
    """Read a file argument (``-`` is standard input) with a clear error."""
    from guestcpu.formats.files import read_bytes

    return read_bytes(path, "a CPU description (XML) or a CPUID dump")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))
