"""``guestcpu caps``, ``cmdline``, ``run``, ``s390x-compare`` and ``s390x-baseline``: the QEMU backend."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from guestcpu.cli.common import (
    accel_option,
    caps_option,
    emit_json,
    json_option,
    load_catalog_for,
    machine_option,
    qemu_option,
    read_input,
)
from guestcpu.errors import InputError

refresh_option = click.option("--refresh", is_flag=True, help="Probe QEMU again even if the cache is valid.")
timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
    help="Seconds QEMU gets for each step (start, each query, stop).",
)
def _warn(message: str) -> None:
    click.echo(f"guestcpu: warning: {message}", err=True)


@contextmanager
def _progress(enabled: bool = True) -> Iterator[Any]:
    """A rich progress display on stderr while probing (silent when stderr is not a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield None
        return
    with Progress(
        TextColumn("[bold]probing QEMU[/bold] {task.description}"), BarColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:
        task = progress.add_task("", total=3)

        def report(step: str, done: int, total: int) -> None:
            progress.update(task, description=step, completed=done, total=total)

        yield report


def obtain_caps(
    qemu: str | None, accel: str | None, *, caps_file: str | None = None, refresh: bool = False,
    timeout: float = 15.0, arch: str = "x86_64", asked_by: str = "--accel",
) -> tuple[Any, str]:
    """(QemuCaps, where they came from) for the CLI: a document, the cache, or a probe.

    ``asked_by`` says where ``accel`` came from, for the error when the document has another.
    """
    if caps_file is not None:
        from guestcpu.qemu.cache import read_caps_file

        caps = read_caps_file(caps_file, accel)
        if accel is not None and caps.accel != accel:
            raise InputError(f"{caps_file} describes accelerator {caps.accel}, but {asked_by} asks for {accel}; "
                             f"pass a document or capture with {accel} capabilities")
        return caps, f"document {caps_file}"
    from guestcpu.qemu.cache import load_caps
    from guestcpu.qemu.probe import default_accel

    with _progress() as report:
        result = load_caps(qemu, accel or default_accel(), arch=arch, refresh=refresh, timeout=timeout,
                           progress=report, warn=_warn)
    return result.caps, f"cache {result.path} ({result.status})"


def _cpu_features_json(cpu: Any) -> list[dict[str, str]]:
    return [{"name": f.name, "policy": f.policy.value if f.policy else "require"} for f in cpu.features]


def caps_json(caps: Any, catalog: Any, source: str) -> dict[str, Any]:
    from guestcpu.formats.libvirt_xml import format_cpu
    from guestcpu.qemu.hypervisor import expansion_bits, host_model, model_blockers

    host: dict[str, Any] | None = None
    unknown_props: list[str] = []
    if caps.arch != "x86_64":
        return _caps_json_verbatim(caps, source)
    if caps.host_static is not None:
        decoded = host_model(caps, catalog)
        _, unknown_props = expansion_bits(caps.host_static, catalog)
        host = {
            "model": decoded.cpu.model,
            "vendor": decoded.cpu.vendor,
            "features": _cpu_features_json(decoded.cpu),
            "xml": format_cpu(decoded.cpu),
            "from": f"{caps.host_model_name} expansion",
            "qemu_vendor": caps.host_static.get("vendor"),
            "qemu_signature": [caps.host_static.get(k) for k in ("family", "model", "stepping")],
            "qemu_model_id": caps.host_static.get("model-id"),
            "non_migratable": list(caps.non_migratable),
        }
    models = []
    for entry in caps.models:
        known, unknown = model_blockers(caps, catalog, entry.name)
        models.append({
            "name": entry.name,
            "usable": entry.usable,
            "blockers": known,
            "unknown_blockers": unknown,
            "qemu_blockers": list(entry.blockers),
            "alias_of": entry.alias_of,
            "deprecated": entry.deprecated,
            "in_catalog": catalog.has_model(entry.name),
        })
    return {
        "accel": caps.accel,
        "arch": caps.arch,
        "qemu": caps.binary,
        "qemu_version": caps.qemu_version,
        "package": caps.package,
        "source": source,
        "probe_seconds": caps.probe_seconds,
        "host_model": host,
        "unknown_props": sorted(unknown_props),
        "models": models,
        "machines": [
            {
                "name": m.name, "alias": m.alias, "default": m.is_default, "default_cpu": m.default_cpu,
                "resolves": m.resolves, "deprecated": m.deprecated,
            }
            for m in caps.machines
        ],
    }


def _caps_json_verbatim(caps: Any, source: str) -> dict[str, Any]:
    """Non-x86 (s390x): model names, features and blockers are QEMU's own, as libvirt takes them."""
    host = None
    if caps.host_static is not None:
        host = {
            "model": caps.host_static.name,
            "vendor": None,
            "features": [{"name": name, "policy": "require"} for name in caps.host_static.enabled],
            "xml": "",
            "from": f"{caps.host_model_name} expansion",
            "qemu_vendor": caps.host_static.get("vendor"),
            "qemu_model_id": caps.host_static.name,
            "non_migratable": list(caps.non_migratable),
        }
    return {
        "accel": caps.accel, "arch": caps.arch, "qemu": caps.binary, "qemu_version": caps.qemu_version,
        "package": caps.package, "source": source, "probe_seconds": caps.probe_seconds, "host_model": host,
        "unknown_props": [],
        "models": [
            {"name": m.name, "usable": m.usable, "blockers": list(m.blockers), "unknown_blockers": [],
             "qemu_blockers": list(m.blockers), "alias_of": m.alias_of, "deprecated": m.deprecated,
             "in_catalog": False}
            for m in caps.models
        ],
        "machines": [
            {"name": m.name, "alias": m.alias, "default": m.is_default, "default_cpu": m.default_cpu,
             "resolves": m.resolves, "deprecated": m.deprecated}
            for m in caps.machines
        ],
    }


def _print_caps(data: dict[str, Any], show_all: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[bold]QEMU[/bold] {data['qemu']} {data['qemu_version']} ({data['package']}), "
                  f"accel [bold]{data['accel']}[/bold]  [dim]{data['source']}[/dim]")
    host = data["host_model"]
    if host:
        req = [f["name"] for f in host["features"] if f["policy"] == "require"]
        dis = [f["name"] for f in host["features"] if f["policy"] == "disable"]
        vendor = f" ({host['vendor']})" if host["vendor"] else ""
        identity = " ".join(str(v) for v in (host["qemu_vendor"], repr(host["qemu_model_id"])) if v and v != "None")
        console.print(f"[bold]host-model[/bold]: {host['model']}{vendor} from QEMU's {host['from']}: {identity}")
        if req:
            console.print(f"  + {' '.join(req)}")
        if dis:
            console.print(f"  - {' '.join(dis)}")
    if data["unknown_props"]:
        console.print(f"[yellow]QEMU properties the catalog does not know[/yellow]: {' '.join(data['unknown_props'])}")
    models = data["models"]
    usable = sum(1 for m in models if m["usable"])
    table = Table(title=f"CPU models: {usable} of {len(models)} usable", title_justify="left")
    table.add_column("model")
    table.add_column("usable")
    table.add_column("alias of")
    table.add_column("blockers")
    for m in models:
        if not show_all and m["alias_of"] and not m["usable"]:
            continue
        blockers = m["blockers"] + [f"{b}?" for b in m["unknown_blockers"]]
        shown = ", ".join(blockers[:12]) + (f" … (+{len(blockers) - 12})" if len(blockers) > 12 else "")
        table.add_row(
            m["name"] + (" [dim](deprecated)[/dim]" if m["deprecated"] else ""),
            "[green]yes[/green]" if m["usable"] else "[red]no[/red]",
            m["alias_of"] or "",
            shown,
        )
    console.print(table)
    default = next((m for m in data["machines"] if m["default"]), None)
    by_rule: dict[str, int] = {}
    for m in data["machines"]:
        by_rule[m["resolves"]] = by_rule.get(m["resolves"], 0) + 1
    console.print(
        f"machines: {len(data['machines'])} (default {default['name'] if default else '-'}"
        f"{' = ' + default['alias'] if default and default['alias'] else ''}, CPU "
        f"{default['default_cpu'] if default else '-'}); bare model names resolve to "
        + ", ".join(f"{rule} on {n}" for rule, n in sorted(by_rule.items()))
    )


@click.command("caps")
@qemu_option
@accel_option
@refresh_option
@timeout_option
@click.option("--document", is_flag=True, help="Print the raw capabilities document (for --caps FILE elsewhere).")
@click.option("--all", "show_all", is_flag=True, help="Also list unusable aliases in the table.")
@click.option("--arch", type=click.Choice(["x86_64", "s390x"]), default="x86_64", show_default=True,
              help="Guest architecture (qemu-system-ARCH); s390x model names come from QEMU itself.")
@json_option
@click.pass_context
def caps_cmd(
    ctx: click.Context, qemu: str | None, accel: str | None, refresh: bool, timeout: float, document: bool,
    show_all: bool, arch: str, as_json: bool,
) -> None:
    """What QEMU can give a guest here: host-model, every model with its blockers, machine types."""
    if arch != "x86_64" and accel is None:
        accel = "tcg"  # other architectures run under emulation here
    caps, source = obtain_caps(qemu, accel, refresh=refresh, timeout=timeout, arch=arch)
    if document:
        from guestcpu.qemu.caps import to_document

        emit_json(to_document(caps))
        return
    catalog = load_catalog_for(ctx)
    data = caps_json(caps, catalog, source)
    if as_json:
        emit_json(data)
    else:
        _print_caps(data, show_all)


def _run_target(
    guest_file: str, qemu: str | None, accel: str | None, machine: str | None, caps_file: str | None,
    refresh: bool, timeout: float,
) -> tuple[Any, Any]:
    """The guest definition of a domain XML (or a bare ``<cpu>``) and where ``run``/``cmdline`` pin it."""
    from guestcpu.lifecycle.define import load_target
    from guestcpu.lifecycle.definition import parse_guest

    source = "standard input" if guest_file == "-" else guest_file
    guest = parse_guest(read_input(guest_file), source)
    if guest.cpu is None:
        raise InputError(
            f"{source} has no <cpu> with a model; name one, or use 'guestcpu define', which pins the machine "
            "type's default CPU"
        )
    caps, _ = obtain_caps(qemu, accel or (guest.accel if caps_file is None else None), caps_file=caps_file,
                          refresh=refresh, timeout=timeout)
    target = load_target(qemu, caps.accel, machine or guest.machine, caps=caps)
    return guest, target


def _run_json(plan: Any, target: Any, catalog: Any, result: Any = None) -> dict[str, Any]:
    from guestcpu.lifecycle.pin import pin_to_document

    mismatch = result.mismatch if result is not None else None
    return {
        "argv": plan.argv,
        "cpu": plan.cpu,
        "cpu_argv": plan.cpu_argv,
        "qemu_model": plan.pin.abi.model,
        "resolution": plan.pin.resolution.rule,
        "machine": plan.pin.abi.machine,
        "accel": target.accel,
        "check": plan.check.value,
        "launched": result is not None,
        "verified": bool(mismatch is not None and mismatch.ok),
        "extra_features": list(mismatch.extra) if mismatch else [],
        "missing_features": list(mismatch.missing) if mismatch else [],
        "differences": list(mismatch.other) if mismatch else [],
        "vendor": (result.live.identity.get("vendor") if result is not None else plan.pin.abi.vendor),
        "fingerprint": plan.pin.fingerprint,
        "unavailable_features": list(plan.unavailable),
        "warnings": list(plan.pin.warnings),
        "notes": list(plan.pin.resolution.notes),
        "exit_status": result.exit_status if result is not None else None,
        "pin": pin_to_document(plan.pin),
    }


@click.command("cmdline")
@click.argument("guest_file", metavar="GUEST.xml")
@qemu_option
@accel_option
@machine_option
@caps_option
@refresh_option
@timeout_option
@json_option
@click.pass_context
def cmdline_cmd(
    ctx: click.Context, guest_file: str, qemu: str | None, accel: str | None, machine: str | None,
    caps_file: str | None, refresh: bool, timeout: float, as_json: bool,
) -> None:
    """The -cpu argument that gives exactly this guest CPU on this QEMU (the CPU pinned in memory)."""
    from guestcpu.lifecycle.run import plan_run

    guest, target = _run_target(guest_file, qemu, accel, machine, caps_file, refresh, timeout)
    catalog = load_catalog_for(ctx)
    plan = plan_run(guest, target, catalog, timeout=timeout)
    if as_json:
        emit_json(_run_json(plan, target, catalog))
        return
    click.echo(shlex.join(plan.cpu_argv))
    for warning in plan.pin.warnings:
        click.echo(f"# {warning}", err=True)


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("guest_file", metavar="GUEST.xml")
@click.argument("qemu_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- QEMU-ARGS...]")
@qemu_option
@accel_option
@machine_option
@caps_option
@refresh_option
@timeout_option
@click.option("--verify-only", is_flag=True, help="Stop QEMU once the CPU is verified (exit 0).")
@click.option("--dry-run", is_flag=True, help="Print the QEMU command line; do not start the guest.")
@json_option
@click.pass_context
def run_cmd(
    ctx: click.Context, guest_file: str, qemu_args: tuple[str, ...], qemu: str | None, accel: str | None,
    machine: str | None, caps_file: str | None, refresh: bool, timeout: float, verify_only: bool, dry_run: bool,
    as_json: bool,
) -> None:
    """Pin the guest CPU in memory, start QEMU paused, verify the vCPU is exactly that pin, then run it.

    check='full' (the default): any missing or extra feature or identity difference stops QEMU, exit
    status 2.  check='partial': missing features and identity refuse, extras warn.  check='none': warn only.
    """
    from guestcpu.lifecycle.run import plan_run, run_plan
    from guestcpu.lifecycle.start import RunningGuest

    guest, target = _run_target(guest_file, qemu, accel, machine, caps_file, refresh, timeout)
    catalog = load_catalog_for(ctx)
    extra = list(qemu_args[1:] if qemu_args[:1] == ("--",) else qemu_args)
    plan = plan_run(guest, target, catalog, extra_args=extra, timeout=timeout)
    if dry_run:
        if as_json:
            emit_json(_run_json(plan, target, catalog))
        else:
            for warning in plan.pin.warnings:
                _warn(warning)
            click.echo(shlex.join(plan.argv))
        return

    def started(running: RunningGuest) -> None:
        if not as_json and not verify_only:
            click.echo(f"guestcpu: CPU verified ({plan.pin.abi.model}); guest running, Ctrl-C stops it", err=True)

    result = run_plan(plan, target, catalog, verify_only=verify_only, extra_args=extra, timeout=timeout,
                      on_verified=started)
    for warning in plan.pin.warnings:
        _warn(warning)
    if not result.mismatch.ok:
        _warn(f"the vCPU differs from the definition (check='{plan.check.value}'): "
              + "; ".join([*(f"extra {n}" for n in result.mismatch.extra),
                           *(f"missing {n}" for n in result.mismatch.missing), *result.mismatch.other]))
    if as_json:
        emit_json(_run_json(plan, target, catalog, result))
    elif verify_only:
        state = "verified" if result.mismatch.ok else f"NOT verified (check='{plan.check.value}')"
        click.echo(f"guest CPU {state}: {plan.pin.abi.model} under {target.accel} on {plan.pin.abi.machine}, "
                   f"{plan.pin.abi.vendor}, {len(plan.pin.abi.required)} features on (pin {plan.pin.fingerprint}, "
                   "made in memory; 'guestcpu cmdline' prints its -cpu)")
    if result.exit_status:
        sys.exit(result.exit_status)


# -- s390x -----------------------------------------------------------------------------
@click.command("s390x-compare")
@click.argument("model_a", metavar="CPU")
@click.argument("model_b", metavar="[OTHER]", required=False)
@qemu_option
@timeout_option
@json_option
def s390x_compare_cmd(model_a: str, model_b: str | None, qemu: str | None, timeout: float, as_json: bool) -> None:
    """Compare two s390x CPU models with QEMU's query-cpu-model-comparison (default OTHER: what QEMU offers).

    A CPU is 'z14', 'z14,vx=off,+msa8', or a file with a libvirt <cpu>.
    """
    from guestcpu.qemu.s390x import compare_models, parse_model_spec

    result = compare_models(parse_model_spec(model_a), parse_model_spec(model_b) if model_b else None,
                            binary=qemu, timeout=timeout)
    if as_json:
        emit_json(result.as_dict())
        return
    props = ", ".join(result.responsible_properties)
    click.echo(f"{result.result}" + (f": {props}" if props else ""))


@click.command("s390x-baseline")
@click.argument("models", metavar="CPU...", nargs=-1, required=True)
@qemu_option
@timeout_option
@json_option
def s390x_baseline_cmd(models: tuple[str, ...], qemu: str | None, timeout: float, as_json: bool) -> None:
    """The s390x CPU model every given CPU can run, from QEMU's query-cpu-model-baseline."""
    from guestcpu.qemu.s390x import baseline_models, parse_model_spec

    result = baseline_models([parse_model_spec(m) for m in models], binary=qemu, timeout=timeout)
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(result.spec)
