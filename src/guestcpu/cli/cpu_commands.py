"""``guestcpu host``, ``compare`` and ``baseline``: answers from files, at once."""

from __future__ import annotations

import sys

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
            }
        )
    else:
        click.echo(format_cpu(result.cpu), nl=False)


@click.command("compare")
@click.argument("host_file", metavar="HOST")
@click.argument("cpu_file", metavar="CPU")
@click.option("--error", "fail_incompatible", is_flag=True,
              help=f"Exit with status {EXIT_INCOMPATIBLE} when the CPUs are incompatible.")
@json_option
@click.pass_context
def compare_cmd(ctx: click.Context, host_file: str, cpu_file: str, fail_incompatible: bool, as_json: bool) -> None:
    """Can HOST run the guest CPU in CPU?

    HOST: a CPUID dump, a libvirt host <cpu>, or a capabilities document.
    CPU: a guest <cpu> or a domain XML.
    """
    from guestcpu.cli.inputs import guest_cpu_from_bytes, host_cpus_from_bytes
    from guestcpu.engine.compare import CompareResult, compare

    catalog = load_catalog_for(ctx)
    hosts = host_cpus_from_bytes(read_input(host_file), host_file, catalog)
    if len(hosts) != 1:
        raise InputError(f"{host_file}: expected one host CPU, found {len(hosts)}")
    guest = guest_cpu_from_bytes(read_input(cpu_file), cpu_file)
    result = compare(hosts[0].with_(type=CpuType.HOST), guest, catalog)
    if as_json:
        emit_json(result.as_dict())
    else:
        click.echo(f"{result.result.value}: {result.summary}")
        if result.missing_features:
            click.echo(f"  missing: {', '.join(result.missing_features)}")
        if result.forbidden_features:
            click.echo(f"  forbidden but present: {', '.join(result.forbidden_features)}")
        if result.extra_features and (result.result is not CompareResult.INCOMPATIBLE or not result.missing_bits):
            click.echo(f"  extra host features: {', '.join(result.extra_features)}")
    if fail_incompatible and result.result is CompareResult.INCOMPATIBLE:
        sys.exit(EXIT_INCOMPATIBLE)


@click.command("baseline")
@click.argument("files", metavar="FILE...", nargs=-1, required=True)
@click.option("--features", "expand", is_flag=True, help="List every feature of the model explicitly.")
@click.option("--migratable", is_flag=True, help="Leave out features that block migration (invtsc, xsaves).")
@click.option("--model", "models", multiple=True, metavar="NAME",
              help="Only consider these models (repeatable).")
@json_option
@click.pass_context
def baseline_cmd(
    ctx: click.Context, files: tuple[str, ...], expand: bool, migratable: bool, models: tuple[str, ...], as_json: bool
) -> None:
    """The best CPU that every CPU in FILE... can run.

    Each FILE holds one or more host CPUs: <cpu> elements one after another (as
    'virsh cpu-baseline' takes them), a capabilities document, or a CPUID dump.
    """
    from guestcpu.cli.inputs import host_cpus_from_bytes
    from guestcpu.engine.baseline import baseline
    from guestcpu.engine.cpubits import compile_cpu
    from guestcpu.formats.libvirt_xml import format_cpu

    catalog = load_catalog_for(ctx)
    cpus: list[CpuDefinition] = []
    for path in files:
        found = host_cpus_from_bytes(read_input(path), path, catalog)
        for cpu in found:
            # Validate here so that an unknown model, feature or vendor names its file.
            compile_cpu(cpu, catalog, path)
            if cpu.vendor is not None:
                catalog.vendor(cpu.vendor, path)
        cpus.extend(found)
    allowed = None
    if models:
        allowed = {catalog.model(name, "--model").name: () for name in models}
    result = baseline(cpus, catalog, expand=expand, migratable=migratable, models=allowed)
    if as_json:
        emit_json(
            {
                **_cpu_json(result.cpu),
                "inputs": len(cpus),
                "dropped_features": result.dropped_features,
                "xml": format_cpu(result.cpu),
            }
        )
    else:
        click.echo(format_cpu(result.cpu), nl=False)
