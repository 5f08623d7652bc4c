"""``guestcpu host``, ``compare`` and ``baseline``: answers from files, at once."""

from __future__ import annotations

import sys
from typing import Any

import click

from guestcpu.cli.common import emit_json, json_option, load_catalog_for, read_input
from guestcpu.errors import InputError
from guestcpu.model.cpu import CpuDefinition, CpuType

EXIT_INCOMPATIBLE = 3


def _cpu_json(cpu: CpuDefinition) -> dict[str, object]:
    data: dict[str, object] = {
        "model": cpu.model,
        "vendor": cpu.vendor,
        "features": [
            {"name": f.name, **({"policy": f.policy.value} if f.policy is not None else {})} for f in cpu.features
        ],
    }
    if cpu.type is CpuType.GUEST:
        data.update(
            mode=cpu.mode.value if cpu.mode else None,
            match=cpu.match.value if cpu.match else None,
            fallback=cpu.fallback.value if cpu.fallback else None,
        )
    if cpu.signature is not None:
        fam, mod, step = cpu.signature
        data["signature"] = {"family": fam, "model": mod, "stepping": step}
    return data


@click.command("host")
@click.option("--cpuid", "cpuid_file", metavar="FILE", help="A CPUID dump (libvirt <cpudata> or 'cpuid -r' output) "
              "instead of this host's CPU.")
@click.option("--flavor", type=click.Choice(["host", "guest"]), default="host", show_default=True,
              help="host: model + extra features only (libvirt capabilities); guest: features may be disabled.")
@json_option
@click.pass_context
def host_cmd(ctx: click.Context, cpuid_file: str | None, flavor: str, as_json: bool) -> None:
    """The CPU of this host (or of a CPUID dump), decoded to the nearest model."""
    from guestcpu.cli.inputs import cpuid_from_bytes, decode_cpuid
    from guestcpu.formats.libvirt_xml import format_cpu

    catalog = load_catalog_for(ctx)
    if cpuid_file is not None:
        source = cpuid_file
        data = cpuid_from_bytes(read_input(cpuid_file), source)
        if data is None:
            raise InputError(f"{source} is not a CPUID dump; expected a libvirt <cpudata> dump or 'cpuid -r' output")
    else:
        from guestcpu.formats.hostcpuid import read_host_cpuid

        source = "this host"
        data = read_host_cpuid()
    result = decode_cpuid(data, catalog, CpuType.HOST if flavor == "host" else CpuType.GUEST, source)
    hint = _better_as_guest(result, data, catalog, source) if flavor == "host" else None
    if as_json:
        emit_json(
            {
                "source": source,
                "flavor": flavor,
                "brand": data.brand or data.model_name_string(),
                **_cpu_json(result.cpu),
                "required_features": result.required,
                "disabled_features": result.disabled,
                "tsx_dropped": result.tsx_dropped,
                "alternatives": result.alternatives,
                "xml": format_cpu(result.cpu),
                **({"guest_flavour_hint": hint} if hint else {}),
            }
        )
    else:
        click.echo(format_cpu(result.cpu), nl=False)
        if hint:
            click.echo(f"guestcpu: note: {hint}", err=True)


def _better_as_guest(result: Any, data: Any, catalog: Any, source: str) -> str | None:
    """The host flavour cannot disable a feature, so one missing bit can push it back years
    (libvirt decodes the i7-4510U as Westmere with 40 extras).  Say so when the guest
    flavour finds a newer model: that is what host-model and a fast guest want."""
    from guestcpu.cli.inputs import decode_cpuid

    guest = decode_cpuid(data, catalog, CpuType.GUEST, source)
    host_model = catalog.model(result.model.canonical)
    guest_model = catalog.model(guest.model.canonical)
    if guest_model.family == host_model.family or guest_model.order <= host_model.order:
        return None
    disabled = f" with {', '.join(guest.disabled)} disabled" if guest.disabled else ""
    return (
        f"as a guest CPU this is {guest.model.name}{disabled} ({len(guest.required)} extra features) rather than "
        f"{result.model.name} with {len(result.required)}: use --flavor guest for what host-model would give"
    )


def _hypervisor_options(command: Any, *, many_caps: bool = False) -> Any:
    """--hypervisor / --caps / --qemu / --accel / --machine: judge against what QEMU can give."""
    from guestcpu.cli.common import accel_option, caps_option, machine_option, qemu_option

    command = click.option(
        "--hypervisor", is_flag=True,
        help="Judge against what QEMU can give on this host (like virsh hypervisor-cpu-*), not a host CPU.",
    )(command)
    if many_caps:
        caps_option = click.option(
            "--caps", "caps_files", metavar="FILE", multiple=True,
            help="A captured capabilities document or host capture; repeat it for several hosts: the result "
            "is startable on every one.",
        )
    for option in (qemu_option, accel_option, caps_option, machine_option):
        command = option(command)
    return click.option(
        "--arch", type=click.Choice(["x86_64", "s390x"]), default="x86_64", show_default=True,
        help="s390x: CPUs are QEMU model specs ('z14,vx=off') or <cpu> files, answered by QEMU itself.",
    )(command)


@click.command("compare")
@click.argument("files", metavar="[HOST] CPU", nargs=-1, required=True)
@click.option("--error", "fail_incompatible", is_flag=True,
              help=f"Exit with status {EXIT_INCOMPATIBLE} when the CPUs are incompatible.")
@lambda command: _hypervisor_options(command, many_caps=True)
@json_option
@click.pass_context
def compare_cmd(
    ctx: click.Context, files: tuple[str, ...], fail_incompatible: bool, hypervisor: bool, qemu: str | None,
    accel: str | None, caps_files: tuple[str, ...], machine: str | None, arch: str, as_json: bool,
) -> None:
    """Can HOST (or this host's QEMU) run the guest CPU in CPU?

    HOST: a CPUID dump, a libvirt host <cpu>, a capabilities document or a capture.
    CPU: a guest <cpu> or a domain XML.  With --hypervisor or --caps FILE, give only
    CPU: it is judged against what QEMU can give (this host's, or the captured one);
    with --caps given for several hosts, against each of them.
    """
    from guestcpu.cli.inputs import guest_cpu_from_bytes, host_cpus_from_bytes
    from guestcpu.engine.compare import CompareResult, compare

    if arch == "s390x":
        _s390x_compare(files, qemu, fail_incompatible, as_json)
        return
    against_qemu = hypervisor or bool(caps_files)
    expected = 1 if against_qemu else 2
    if len(files) != expected:
        usage = "CPU (with --hypervisor/--caps)" if against_qemu else "HOST CPU (or --hypervisor CPU)"
        raise InputError(f"compare takes {usage}; got {len(files)} file(s)")
    catalog = load_catalog_for(ctx)
    guest_data = read_input(files[-1])
    guest = guest_cpu_from_bytes(guest_data, files[-1])
    extra: dict[str, object] = {}
    if against_qemu:
        from guestcpu.cli.inputs import domain_accel
        from guestcpu.cli.qemu_commands import obtain_caps
        from guestcpu.qemu.hypervisor import hypervisor_compare

        # A <domain type='qemu'> runs under TCG: judge it there unless --accel says otherwise.
        domain = domain_accel(guest_data, files[-1]) if accel is None else None
        asked = f"the domain type of {files[-1]}" if domain else "--accel"
        targets = [obtain_caps(None, accel or domain, caps_file=path, asked_by=asked) for path in caps_files]
        if hypervisor:
            targets.append(obtain_caps(qemu, accel or domain))
        if len(targets) > 1:
            _compare_everywhere(guest, targets, catalog, machine, fail_incompatible, as_json)
            return
        caps, source = targets[0]
        hv = hypervisor_compare(guest, caps, catalog, machine=machine)
        result = hv.comparison
        extra = {**hv.as_dict(), "caps": source}
    else:
        hosts = host_cpus_from_bytes(read_input(files[0]), files[0], catalog)
        if len(hosts) != 1:
            raise InputError(f"{files[0]}: expected one host CPU, found {len(hosts)}")
        result = compare(hosts[0].with_(type=CpuType.HOST), guest, catalog)
    if as_json:
        emit_json({**result.as_dict(), **extra})
    else:
        click.echo(f"{result.result.value}: {result.summary}")
        if result.missing_features:
            click.echo(f"  missing: {', '.join(result.missing_features)}")
        uncatalogued = extra.get("uncatalogued_blockers")
        if isinstance(uncatalogued, list) and uncatalogued:
            click.echo(f"  missing (QEMU features the catalog lacks): {', '.join(uncatalogued)}")
        notes = extra.get("notes")
        for note in notes if isinstance(notes, list) else []:
            click.echo(f"  note: {note}")
        if result.forbidden_features:
            click.echo(f"  forbidden but present: {', '.join(result.forbidden_features)}")
        if result.extra_features and (result.result is not CompareResult.INCOMPATIBLE or not result.missing_bits):
            label = "extra features on offer" if against_qemu else "extra host features"
            click.echo(f"  {label}: {', '.join(result.extra_features)}")
    if fail_incompatible and result.result is CompareResult.INCOMPATIBLE:
        sys.exit(EXIT_INCOMPATIBLE)


def _verify_baseline_starts(
    cpu: CpuDefinition, hosts: list[tuple[Any, str]], catalog: Any, machine: str | None, *, local_last: bool,
) -> list[str]:
    """Start the baseline (paused, check='full') on every QEMU that is at hand; the hosts it started on.

    That is this host's QEMU with --hypervisor, and every TCG document whose binary is
    here at the same version (TCG depends on QEMU only).  A KVM capture of another host
    cannot be started here: for those the answer rests on QEMU's recorded verdicts.
    A baseline that does not start is an error naming the host and what stopped it.
    """
    import os

    from guestcpu.errors import GuestCpuError, IncompatibleError
    from guestcpu.lifecycle.define import load_target
    from guestcpu.lifecycle.definition import GuestDefinition
    from guestcpu.lifecycle.run import plan_run, run_plan
    from guestcpu.model.cpu import Check
    from guestcpu.qemu.cache import load_caps

    checked: list[str] = []
    for index, (caps, source) in enumerate(hosts):
        is_local = local_last and index == len(hosts) - 1
        if not is_local:
            if caps.accel != "tcg" or not os.path.exists(caps.binary):
                continue
            try:
                here = load_caps(caps.binary, "tcg").caps
            except GuestCpuError:
                continue
            if here.qemu_version != caps.qemu_version:
                continue
            caps = here
        # The one launch path: the baseline pinned in memory, started paused, its vCPU read back.
        where = f"{source} ({caps.accel}, QEMU {caps.qemu_version})"
        try:
            target = load_target(caps.binary, caps.accel, machine, caps=caps)
            plan = plan_run(GuestDefinition(cpu=cpu.with_(check=Check.FULL)), target, catalog)
            result = run_plan(plan, target, catalog, verify_only=True)
        except GuestCpuError as exc:
            raise IncompatibleError(f"the baseline does not start on {where}: " + " ".join(str(exc).split())) from None
        if not result.mismatch.ok:
            raise IncompatibleError(f"the baseline does not start as printed on {where}: {result.mismatch}")
        checked.append(source)
    return checked


def _compare_everywhere(
    guest: CpuDefinition, targets: list[tuple[Any, str]], catalog: Any, machine: str | None,
    fail_incompatible: bool, as_json: bool,
) -> None:
    """One verdict per host; the guest can go everywhere only if no host is incompatible."""
    from guestcpu.engine.compare import CompareResult
    from guestcpu.qemu.hypervisor import hypervisor_compare

    verdicts = [(source, caps, hypervisor_compare(guest, caps, catalog, machine=machine)) for caps, source in targets]
    results = {v.result for _, _, v in verdicts}
    overall = (CompareResult.INCOMPATIBLE if CompareResult.INCOMPATIBLE in results
               else CompareResult.SUPERSET if CompareResult.SUPERSET in results else CompareResult.IDENTICAL)
    if as_json:
        missing = sorted({f for _, _, v in verdicts for f in v.comparison.missing_features})
        emit_json({
            "result": overall.value,
            "missing_features": missing,
            "hosts": [{"caps": source, "accel": caps.accel, **v.as_dict()} for source, caps, v in verdicts],
        })
    else:
        refused = sum(1 for _, _, v in verdicts if v.result is CompareResult.INCOMPATIBLE)
        click.echo(f"{overall.value}: {len(verdicts) - refused} of {len(verdicts)} hosts can give this CPU")
        for source, caps, v in verdicts:
            line = f"  {source} ({caps.accel}): {v.result.value}"
            if v.comparison.missing_features:
                line += f"; missing: {', '.join(v.comparison.missing_features)}"
            click.echo(line)
    if fail_incompatible and overall is CompareResult.INCOMPATIBLE:
        sys.exit(EXIT_INCOMPATIBLE)


def _s390x_compare(files: tuple[str, ...], qemu: str | None, fail_incompatible: bool, as_json: bool) -> None:
    from guestcpu.qemu.s390x import host_runs_guest, parse_model_spec

    if len(files) > 2:
        raise InputError(f"s390x compare takes [HOST] CPU; got {len(files)} arguments")
    # Like x86: can HOST (default: what this QEMU offers) run the guest CPU?
    guest = parse_model_spec(files[-1])
    host = parse_model_spec(files[0]) if len(files) == 2 else None
    result = host_runs_guest(guest, host, binary=qemu)
    verdict = result.host_verdict
    if as_json:
        emit_json({**result.as_dict(), "host": result.modela.spec, "guest": guest.spec, "verdict": verdict})
    else:
        props = ", ".join(result.responsible_properties)
        note = f" (QEMU: the host is a {result.result} of the guest)" if result.result != verdict else ""
        click.echo(f"{verdict}{note}" + (f": {props}" if props else ""))
    if fail_incompatible and verdict == "incompatible":
        sys.exit(EXIT_INCOMPATIBLE)


@click.command("baseline")
@click.argument("files", metavar="FILE...", nargs=-1, required=True)
@click.option("--features", "expand", is_flag=True, help="List every feature of the model explicitly.")
@click.option("--migratable", is_flag=True, help="Leave out features that block migration (invtsc, xsaves).")
@click.option("--model", "models", multiple=True, metavar="NAME",
              help="Only consider these models (repeatable).")
@lambda command: _hypervisor_options(command, many_caps=True)
@json_option
@click.pass_context
def baseline_cmd(
    ctx: click.Context, files: tuple[str, ...], expand: bool, migratable: bool, models: tuple[str, ...],
    hypervisor: bool, qemu: str | None, accel: str | None, caps_files: tuple[str, ...], machine: str | None,
    arch: str, as_json: bool,
) -> None:
    """The best CPU that every CPU in FILE... can run.

    Each FILE holds one or more host CPUs: <cpu> elements one after another (as
    'virsh cpu-baseline' takes them), a capabilities document, or a CPUID dump.
    With --hypervisor or --caps FILE the result is also startable by that QEMU: every
    feature it requires is in QEMU's offer.  With --caps given for several hosts (and
    --hypervisor for this one), it is startable on every one of them.
    """
    from guestcpu.cli.inputs import host_cpus_from_bytes
    from guestcpu.engine.baseline import baseline
    from guestcpu.engine.cpubits import compile_cpu
    from guestcpu.formats.libvirt_xml import format_cpu

    if arch == "s390x":
        from guestcpu.qemu.s390x import baseline_models, parse_model_spec

        s390 = baseline_models([parse_model_spec(f) for f in files], binary=qemu)
        if as_json:
            emit_json(s390.as_dict())
        else:
            click.echo(s390.spec)
        return
    catalog = load_catalog_for(ctx)
    hosts = []
    if hypervisor or caps_files:
        from guestcpu.cli.qemu_commands import obtain_caps
        from guestcpu.qemu.defined import with_qemu_models

        hosts = [obtain_caps(None, accel, caps_file=path) for path in caps_files]
        if hypervisor:
            hosts.append(obtain_caps(qemu, accel))
        for host_caps, _ in hosts:
            # a model only these QEMUs define is taken as they define it (the result notes it)
            catalog = with_qemu_models(catalog, host_caps)
    cpus: list[CpuDefinition] = []
    for path in files:
        found = host_cpus_from_bytes(read_input(path), path, catalog)
        for cpu in found:
            # Validate here so that an unknown model, feature or vendor names its file.
            compile_cpu(cpu, catalog, path)
            if cpu.vendor is not None:
                catalog.vendor(cpu.vendor, path)
        cpus.extend(found)
    allowed: dict[str, tuple[str, ...]] | None = None
    if models:
        allowed = {catalog.model(name, "--model").name: () for name in models}
    extra: dict[str, object] = {}
    if hosts:
        from guestcpu.qemu.hypervisor import baseline_everywhere

        everywhere = baseline_everywhere(cpus, [(source, caps) for caps, source in hosts], catalog,
                                         migratable=migratable, expand=expand, machine=machine, models=allowed)
        hv = everywhere.result
        cpu_out = hv.cpu
        started = _verify_baseline_starts(cpu_out, hosts, catalog, machine, local_last=hypervisor)
        dropped = hv.engine.dropped_features
        accels = sorted({caps.accel for caps, _ in hosts})
        extra = {"caps": [source for _, source in hosts], "accel": accels[0] if len(accels) == 1 else "mixed",
                 "qemu_model": hv.qemu_model, "not_offered": hv.not_offered, "qemu_added": hv.qemu_added,
                 "notes": list(hv.notes), "verified_start": started,
                 "hosts": [{"caps": label, "accel": caps.accel, "result": verdict.result.value}
                           for (label, verdict), (caps, _) in zip(everywhere.verdicts, hosts, strict=True)]}
    else:
        result = baseline(cpus, catalog, expand=expand, migratable=migratable, models=allowed)
        cpu_out = result.cpu
        dropped = result.dropped_features
    if as_json:
        emit_json(
            {
                **_cpu_json(cpu_out),
                "inputs": len(cpus),
                "dropped_features": dropped,
                **extra,
                "xml": format_cpu(cpu_out),
            }
        )
    else:
        click.echo(format_cpu(cpu_out), nl=False)
