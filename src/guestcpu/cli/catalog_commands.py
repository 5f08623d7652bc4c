"""``guestcpu models`` and ``guestcpu model NAME``: what the catalog holds."""

from __future__ import annotations

import itertools

import click

from guestcpu.catalog.catalog import Catalog
from guestcpu.cli.common import emit_json, json_option, load_catalog_for, qemu_option
from guestcpu.model.cpumodel import CpuModel


def _model_row(model: CpuModel) -> dict[str, object]:
    return {
        "name": model.name,
        "family": model.family,
        "version": model.version,
        "alias_of": model.alias_of,
        "vendor": model.vendor,
        "deprecated": model.deprecated,
        "qemu": model.qemu.to_json() if model.qemu else None,
        "source": model.source,
    }


@click.command("models")
@click.option("--vendor", help="Only models of this vendor (Intel, AMD, Hygon).")
@json_option
@click.pass_context
def models_cmd(ctx: click.Context, vendor: str | None, as_json: bool) -> None:
    """List every CPU model of the catalog, oldest first."""
    catalog = load_catalog_for(ctx)
    if vendor is not None:
        # vendor names are matched as libvirt's CLI users type them: amd, AMD, Amd
        spelled = next((v.name for v in catalog.vendors if v.name.lower() == vendor.lower()), vendor)
        vendor = catalog.vendor(spelled, "--vendor").name
    models = [m for m in catalog.models if vendor is None or m.vendor == vendor]
    if as_json:
        emit_json({"catalog": catalog.source, "models": [_model_row(m) for m in models]})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(models)} CPU models ({catalog.source})")
    for column in ("model", "alias of", "vendor", "QEMU releases", "notes"):
        table.add_column(column)
    for m in models:
        notes = ", ".join(n for n in ("deprecated" if m.deprecated else "", m.notes) if n)
        table.add_row(m.name, m.alias_of or "", m.vendor or "", str(m.qemu) if m.qemu else "", notes)
    Console().print(table)


def _version_diffs(catalog: Catalog, family: str) -> list[dict[str, object]]:
    versions = catalog.versions(family)
    diffs: list[dict[str, object]] = []
    for old, new in itertools.pairwise(versions):
        change: dict[str, object] = {
            "from": old.name,
            "to": new.name,
            "added": catalog.names(new.features & ~old.features),
            "removed": catalog.names(old.features & ~new.features),
        }
        if old.identity and new.identity and old.identity.model_id != new.identity.model_id:
            change["model_id"] = [old.identity.model_id, new.identity.model_id]
        diffs.append(change)
    return diffs


def _machine_types(catalog: Catalog, name: str, as_json: bool, qemu: str | None = None) -> None:
    """Which version ``name`` means per machine type (this host's QEMU, else the rules alone)."""
    from guestcpu.errors import GuestCpuError
    from guestcpu.lifecycle.versions import machine_type_table

    catalog.model(name)
    caps = None
    source = "QEMU's rules (no QEMU found to list its machine types)"
    from guestcpu.qemu.cache import load_caps

    try:
        caps = load_caps(qemu, "tcg").caps
        source = f"QEMU {caps.qemu_version} ({caps.binary})"
    except GuestCpuError:
        if qemu is not None:
            raise  # the QEMU asked for must answer; only a missing default QEMU falls back to the rules

    rows = machine_type_table(name, catalog, caps)
    if as_json:
        emit_json({
            "model": name,
            "source": source,
            "machine_types": [
                {"rule": r.rule, "resolves_to": r.resolves_to, "machines": list(r.machines), "note": r.note}
                for r in rows
            ],
        })
        return
    click.echo(f"{name} by machine type ({source}):")
    for row in rows:
        click.echo(f"  {row.rule}: {row.resolves_to} - {row.note}")
        if row.machines:
            click.echo(f"    {', '.join(row.machines)}")


@click.command("model")
@click.argument("name")
@click.option("--machine-types", is_flag=True, help="Show which version NAME means on each machine type "
              "(pc/q35 <= 4.0: legacy, newer: v1, microvm: latest) and for a new definition.")
@qemu_option
@json_option
@click.pass_context
def model_cmd(ctx: click.Context, name: str, machine_types: bool, qemu: str | None, as_json: bool) -> None:
    """One model: what it resolves to, its versions, aliases, features and changes."""
    catalog = load_catalog_for(ctx)
    if machine_types:
        _machine_types(catalog, name, as_json, qemu)
        return
    model = catalog.model(name)
    target = catalog.model(model.canonical)
    family_versions = catalog.versions(target.family)
    aliases = sorted({m.name for m in catalog.models if m.alias_of and m.alias_of in {v.name for v in family_versions}})
    data: dict[str, object] = {
        **_model_row(model),
        "canonical": target.name,
        "latest_version": family_versions[-1].name if family_versions else target.name,
        "versions": [v.name for v in family_versions],
        "aliases": {a: catalog.model(a).alias_of for a in aliases},
        "signatures": [
            {"family": s.family, "model": s.model, **({"steppings": bin(s.steppings)} if s.steppings else {})}
            for s in target.signatures
        ],
        "identity": target.identity.__dict__ if target.identity else None,
        "features": catalog.names(target.features),
        "removed_features": catalog.names(target.removed),
        "version_changes": _version_diffs(catalog, target.family),
    }
    if as_json:
        emit_json(data)
        return
    click.echo(f"{model.name}" + (f" -> {target.name}" if model.alias_of else ""))
    click.echo(f"  vendor: {target.vendor}   family: {target.family}   catalog: {model.source}")
    if target.identity:
        ident = target.identity
        click.echo(
            f"  CPUID: {ident.vendor} family {ident.family} model {ident.model} stepping {ident.stepping}, "
            f"level {ident.level:#x}, xlevel {ident.xlevel:#x}, model-id '{ident.model_id}'"
        )
    if family_versions:
        click.echo(f"  versions: {', '.join(v.name for v in family_versions)} (latest {data['latest_version']})")
    if aliases:
        click.echo("  aliases: " + ", ".join(f"{a} -> {catalog.model(a).alias_of}" for a in aliases))
    click.echo(f"  features ({len(data['features'])}): {' '.join(catalog.names(target.features))}")  # type: ignore[arg-type]
    if target.removed:
        click.echo(f"  removed by QEMU, kept explicit: {' '.join(catalog.names(target.removed))}")
    for change in data["version_changes"]:  # type: ignore[attr-defined]
        parts = []
        if change["added"]:
            parts.append("+" + " +".join(change["added"]))
        if change["removed"]:
            parts.append("-" + " -".join(change["removed"]))
        if "model_id" in change:
            parts.append(f"model-id '{change['model_id'][1]}'")
        click.echo(f"  {change['from']} -> {change['to']}: {' '.join(parts) or 'no feature change'}")


@click.command("schema")
@click.argument("name", type=click.Choice(["pin", "host-capture", "qemu-caps"]))
def schema_cmd(name: str) -> None:
    """Print the JSON Schema of a guestcpu document: a pin, a host capture or QEMU capabilities."""
    from guestcpu.schemas import schema_text

    click.echo(schema_text(name), nl=False)
