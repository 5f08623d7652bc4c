"""The ``guestcpu`` command.

Commands live in sibling modules and are imported only when invoked, so that a
single small call pays for what it uses and no more (start-up time is most of a CLI
call's cost).  Every deliberate error is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import import_module
from typing import Any

import click

from guestcpu import __version__

#: command name -> "module:attribute" of its click command, imported lazily.
COMMANDS: dict[str, str] = {
    "host": "guestcpu.cli.cpu_commands:host_cmd",
    "compare": "guestcpu.cli.cpu_commands:compare_cmd",
    "baseline": "guestcpu.cli.cpu_commands:baseline_cmd",
    "models": "guestcpu.cli.catalog_commands:models_cmd",
    "model": "guestcpu.cli.catalog_commands:model_cmd",
    "schema": "guestcpu.cli.catalog_commands:schema_cmd",
    "serve": "guestcpu.cli.serve_command:serve_cmd",
    "caps": "guestcpu.cli.qemu_commands:caps_cmd",
    "cmdline": "guestcpu.cli.qemu_commands:cmdline_cmd",
    "run": "guestcpu.cli.qemu_commands:run_cmd",
    "s390x-compare": "guestcpu.cli.qemu_commands:s390x_compare_cmd",
    "s390x-baseline": "guestcpu.cli.qemu_commands:s390x_baseline_cmd",
    "define": "guestcpu.cli.lifecycle_commands:define_cmd",
    "start": "guestcpu.cli.lifecycle_commands:start_cmd",
    "capture": "guestcpu.cli.lifecycle_commands:capture_cmd",
    "migrate-check": "guestcpu.cli.lifecycle_commands:migrate_check_cmd",
    "restore-check": "guestcpu.cli.lifecycle_commands:restore_check_cmd",
    "diff": "guestcpu.cli.lifecycle_commands:diff_cmd",
    "upgrade-check": "guestcpu.cli.upgrade_commands:upgrade_check_cmd",
    "fleet": "guestcpu.cli.fleet_commands:fleet_cmd",
}

HELP = {
    "host": "The CPU of this host or of a CPUID dump, as libvirt <cpu> XML.",
    "compare": "Compare a guest CPU with a host CPU: identical, superset or incompatible.",
    "baseline": "The best CPU model and features that every given CPU can run.",
    "models": "List the CPU models of the catalog.",
    "model": "Show one CPU model: versions, aliases, features and what changed.",
    "schema": "Print the JSON Schema of a guestcpu document (pin, host-capture, qemu-caps).",
    "serve": "Serve the fleet's answers over HTTP (FastAPI, OpenAPI, token auth).",
    "caps": "What QEMU can give a guest here: host-model, usable models and their blockers, machines.",
    "cmdline": "The QEMU -cpu argument for exactly this guest CPU.",
    "run": "Start QEMU with a guest CPU verified to be exactly the one asked for.",
    "s390x-compare": "Compare s390x CPU models (QEMU's query-cpu-model-comparison).",
    "s390x-baseline": "The s390x CPU model all given CPUs can run (QEMU's query-cpu-model-baseline).",
    "define": "Pin a guest's CPU once: every property explicit, with an ABI fingerprint.",
    "start": "Start a guest from its pin and verify its vCPU (check='full').",
    "capture": "This host's CPUID and QEMU capabilities, one portable document.",
    "migrate-check": "Can a destination give exactly this guest's pinned CPU?",
    "restore-check": "Can a saved guest be restored there with exactly its pinned CPU?",
    "diff": "What changed between two pins, or two captures of a host.",
    "upgrade-check": "What a QEMU, microcode or kernel upgrade does to the pinned guests, before it.",
    "fleet": "Many hosts: inventory, baseline, where guests can go, what-if, x86-64 levels, freeze.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="guestcpu")
@click.option(
    "--catalog-libvirt",
    "catalog_libvirt",
    type=click.Path(file_okay=False, path_type=str),
    envvar="GUESTCPU_CATALOG_LIBVIRT",
    help="Use a libvirt cpu_map directory (e.g. /usr/share/libvirt/cpu_map) as the whole catalog.",
)
@click.option(
    "--models-dir",
    "models_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Read drop-in models from this directory instead of /etc/guestcpu/models.d and "
    "$XDG_CONFIG_HOME/guestcpu/models.d (repeatable).",
)
@click.pass_context
def cli(ctx: click.Context, catalog_libvirt: str | None, models_dirs: tuple[str, ...]) -> None:
    """guestcpu: fully specified, verified and stable guest CPUs for QEMU/KVM."""
    ctx.obj = {"catalog_libvirt": catalog_libvirt, "models_dirs": models_dirs or None}


#: what input may put in a message that would break its line or drive the terminal: control
#: characters but newline and tab, and the other line separators str.splitlines knows
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def printable(message: object) -> str:
    """``message`` with the characters of a name read from input that a terminal would act on escaped."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(message))


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    # One line, like the errors: no file name, line number or source line.
    click.echo(f"guestcpu: warning: {printable(message)}", err=True)


def _on_stop_signal(signum: int, frame: Any) -> None:
    from guestcpu.errors import TerminatedError

    # Like Ctrl-C: unwinds, so open files are closed and temporary ones removed; one line, exit 128+signal.
    raise TerminatedError(signum)


def main(argv: list[str] | None = None) -> None:
    import signal
    import warnings

    from guestcpu.errors import GuestCpuError

    warnings.showwarning = _show_warning
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_stop_signal)
    try:
        cli.main(args=argv, prog_name="guestcpu", standalone_mode=False)
    except GuestCpuError as exc:
        click.echo(f"guestcpu: error: {printable(exc)}", err=True)
        sys.exit(exc.exit_status)
    except click.exceptions.Abort:
        click.echo("guestcpu: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        click.echo("guestcpu: interrupted", err=True)
        sys.exit(130)


def context_options(ctx: click.Context) -> dict[str, Any]:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, dict) else {}


if __name__ == "__main__":
    main()
