"""``guestcpu define``, ``start``, ``capture``, ``migrate-check``, ``restore-check`` and ``diff``.

The stable-ABI lifecycle of one guest (``guestcpu.lifecycle``): pin once, start and
move only with the pin, refuse anything else.  Refusals (a vCPU that differs from its
pin, a destination that cannot give it) exit with status 2 and name every feature
that decides it; bad input exits with status 1 and leaves nothing half-written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from guestcpu.cli.common import emit_json, json_option, load_catalog_for, qemu_option_as, read_input
from guestcpu.errors import GuestCpuError, InputError

EXIT_REFUSED = 2

# The same --qemu as every other command (GUESTCPU_QEMU included), named ``binary`` here.
qemu_option = qemu_option_as("binary")


def _warn(lines: Any) -> None:
    for line in lines:
        click.echo(f"guestcpu: warning: {line}", err=True)


def _abi_lines(pin: Any) -> list[str]:
    abi = pin.abi
    version = f"version {abi.version}" if abi.version is not None else abi.mode
    default = "the machine type's default CPU" if pin.policy.default_cpu else pin.policy.mode
    source = pin.resolution.requested or default
    return [
        f"  model {abi.model} ({version}; {pin.resolution.rule} from {source}) "
        f"on {abi.machine}, {abi.accel}, QEMU {pin.made_with.get('qemu_version')}",
        f"  {abi.vendor} family {abi.family} model {abi.model_number} stepping {abi.stepping}, level {abi.level:#x}, "
        f"xlevel {abi.xlevel:#x}, model-id '{abi.model_id}'",
        f"  features: {len(abi.required)} required, {len(abi.disabled)} disabled",
        f"  fingerprint {pin.fingerprint}",
    ]


# -- define -------------------------------------------------------------------------


@click.command("define")
@click.argument("guest_file", metavar="GUEST.xml")
@click.option("--existing", is_flag=True, help="An existing guest: resolve unversioned models as QEMU does for its "
              "machine type (pc/q35 <= 4.0: legacy, newer: v1, microvm: latest) instead of the latest version.")
@qemu_option
@click.option("--accel", type=click.Choice(["kvm", "tcg"]), help="Accelerator (default: the domain's type, else KVM "
              "when usable, else TCG).")
@click.option("--machine", metavar="TYPE", help="Machine type (default: the domain's, else QEMU's default).")
@click.option("-o", "--output", required=True, metavar="PIN.json", help="Where to write the pin ('-': stdout).")
@click.option("--libvirt-xml", "xml_output", metavar="FILE", help="Also write the pinned CPU as libvirt's live <cpu>.")
@click.option("--force", is_flag=True, help="Replace a pin of another guest (another name or UUID) at -o.")
@json_option
@click.pass_context
def define_cmd(
    ctx: click.Context, guest_file: str, existing: bool, binary: str | None, accel: str | None, machine: str | None,
    output: str, xml_output: str | None, force: bool, as_json: bool,
) -> None:
    """Pin a guest's CPU: every property explicit for its machine type, with an ABI fingerprint."""
    from guestcpu.formats.files import Output, write_outputs
    from guestcpu.lifecycle.define import define
    from guestcpu.lifecycle.definition import parse_guest
    from guestcpu.lifecycle.documents import check_pin_owner, document_output
    from guestcpu.lifecycle.pin import pin_to_document

    catalog = load_catalog_for(ctx)
    guest = parse_guest(read_input(guest_file), guest_file)
    check_pin_owner(output, guest.name, guest.uuid, force)
    pin = define(guest, catalog, binary=binary, accel=accel, machine=machine, existing=existing)
    document = pin_to_document(pin)
    outputs = [document_output(output, document, what="a pin")]
    if xml_output is not None:
        outputs.append(Output(xml_output, pin.libvirt_cpu, what="libvirt <cpu> XML"))
    # Both or neither: the XML is not written when the pin cannot be.
    write_outputs(outputs)
    if output == "-":
        _warn(pin.warnings)
        return
    if as_json:
        emit_json({"output": output, "libvirt_xml": xml_output, "guest": guest.name, "pin": document})
        return
    _warn(pin.warnings)
    click.echo(f"pinned {guest.name or guest_file} -> {output}")
    for line in _abi_lines(pin):
        click.echo(line)


# -- start --------------------------------------------------------------------------


@click.command("start", context_settings={"ignore_unknown_options": True})
@click.argument("pin_file", metavar="PIN.json")
@click.option("--verify-only", is_flag=True, help="Launch paused, verify the vCPU against the pin, and stop.")
@click.option("--incoming", metavar="URI", help="Receive a migration or a saved state (e.g. unix:/run/mig.sock, "
              "'exec:cat STATE'): the pin is used exactly as it is, never recomputed.")
@qemu_option
@json_option
@click.argument("qemu_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- QEMU ARGS...]")
@click.pass_context
def start_cmd(
    ctx: click.Context, pin_file: str, verify_only: bool, incoming: str | None, binary: str | None, as_json: bool,
    qemu_args: tuple[str, ...],
) -> None:
    """Start a guest from its pin and verify its vCPU (check='full'); a difference stops it (exit 2).

    Devices, memory and the like go after '--'.  A fresh start of a host-model,
    host-passthrough or maximum guest recomputes its CPU from this host's current
    capabilities and writes the new pin back to PIN.json once verified.
    """
    from guestcpu.lifecycle.define import load_target
    from guestcpu.lifecycle.documents import read_pin, write_document
    from guestcpu.lifecycle.pin import pin_to_document
    from guestcpu.lifecycle.start import RunningGuest, plan_start, start_async
    from guestcpu.qemu.probe import AccelUnavailableError
    from guestcpu.qemu.process import kvm_unusable_reason, run_sync

    catalog = load_catalog_for(ctx)
    pin = read_pin(pin_file)
    try:
        target = load_target(binary, pin.abi.accel, pin.abi.machine)
    except AccelUnavailableError:
        raise GuestCpuError(
            f"the pin is for {pin.abi.accel.upper()}, which is not usable here ({kvm_unusable_reason()}); "
            "a pinned guest runs only under the accelerator it was pinned for"
        ) from None
    plan = plan_start(pin, target, catalog, fresh=incoming is None)
    extra = list(qemu_args[1:] if qemu_args[:1] == ("--",) else qemu_args)

    def verified(guest: RunningGuest) -> None:
        if plan.recomputed and not verify_only:
            write_document(pin_file, pin_to_document(plan.pin))
        report = {
            "verified": True,
            "fingerprint": plan.pin.fingerprint,
            "recomputed": plan.recomputed,
            "previous_fingerprint": plan.previous_fingerprint,
            "pin_written": plan.recomputed and not verify_only,
            "machine": plan.pin.abi.machine,
            "accel": plan.pin.abi.accel,
            "model": plan.pin.abi.model,
            "vcpus": guest.live.vcpus,
            "launch_seconds": round(guest.launch_seconds, 3),
            "pid": guest.qemu.pid,
            "argv": guest.argv,
        }
        if as_json:
            emit_json(report)
            return
        if plan.recomputed and plan.previous_fingerprint == plan.pin.fingerprint:
            click.echo(f"{pin.policy.mode}: recomputed for this fresh start: unchanged")
        elif plan.recomputed:
            what = f"written to {pin_file}" if not verify_only else "--verify-only: the pin file is left as it was"
            click.echo(f"{pin.policy.mode}: recomputed for this fresh start: {plan.previous_fingerprint} -> "
                       f"{plan.pin.fingerprint}; {what}")
        click.echo(f"verified: the vCPU is exactly the pin {plan.pin.fingerprint} "
                   f"({len(plan.pin.abi.features)} features, {plan.pin.abi.model} on {plan.pin.abi.machine}, "
                   f"{plan.pin.abi.accel}) in {guest.launch_seconds:.2f} s")
        if not verify_only:
            waiting = "waiting for the incoming state, then " if incoming else ""
            click.echo(
                f"running: QEMU pid {guest.qemu.pid}; {waiting}guestcpu stays until QEMU exits (Ctrl-C stops it)"
            )

    result = run_sync(start_async(plan, target, catalog, verify_only=verify_only, extra_args=extra,
                                  incoming=incoming, on_verified=verified))
    if result.exit_status:
        raise GuestCpuError(f"QEMU exited with status {result.exit_status}")


# -- capture ------------------------------------------------------------------------


@click.command("capture")
@click.option("-o", "--output", required=True, metavar="HOST.json", help="Where to write the capture ('-': stdout).")
@qemu_option
@click.option("--refresh", is_flag=True, help="Probe QEMU again instead of using the capabilities cache.")
@click.option("--mode", "file_mode", default="0600", show_default=True, metavar="OCTAL",
              help="Permissions of a new capture file (minus the umask): it describes this host (hostname, kernel, "
              "CPUID), so it is private unless asked otherwise, e.g. --mode 0644.")
@json_option
def capture_cmd(output: str, binary: str | None, refresh: bool, file_mode: str, as_json: bool) -> None:
    """This host's CPUID and QEMU capabilities (KVM and TCG) as one portable document."""
    from guestcpu.lifecycle.capture import capture_host, capture_to_document
    from guestcpu.lifecycle.documents import write_document

    try:
        mode = int(file_mode, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise InputError(f"--mode {file_mode!r} is not a file mode; expected octal permissions such as 0600 or 0644")
    capture = capture_host(binary, refresh=refresh)
    write_document(output, capture_to_document(capture), mode)
    summary = {
        "output": output,
        "hostname": capture.hostname,
        "qemu": capture.qemu_version,
        "cpu": dict(capture.cpu),
        "cpuid_error": capture.cpuid_error,
        "accels": {
            accel: {"usable_models": sum(m.usable for m in caps.models), "models": len(caps.models)}
            for accel, caps in capture.accels.items()
        },
        "unavailable": dict(capture.unavailable),
    }
    if output == "-":
        return
    if as_json:
        emit_json(summary)
        return
    click.echo(f"captured {capture.hostname}: QEMU {capture.qemu_version} ({capture.binary}) -> {output}")
    for accel, caps in sorted(capture.accels.items()):
        click.echo(f"  {accel}: {sum(m.usable for m in caps.models)} of {len(caps.models)} CPU models usable")
    for accel, reason in sorted(capture.unavailable.items()):
        click.echo(f"  {accel}: not captured ({reason})")
    if capture.cpu:
        cpu = capture.cpu
        click.echo(f"  CPUID: {cpu.get('vendor')} family {cpu.get('family')} model {cpu.get('model')} "
                   f"stepping {cpu.get('stepping')} '{cpu.get('brand') or ''}'")
    elif capture.cpuid_error:
        _warn([f"this host's CPUID was not captured: {capture.cpuid_error}"])


# -- migrate-check / restore-check ----------------------------------------------------


def _destination_check(
    pin_file: str, capture_files: tuple[str, ...], binary: str | None, purpose: str, as_json: bool
) -> None:
    """One verdict per destination (every ``--to``, or the local QEMU); exit 2 if any refuses."""
    from guestcpu.lifecycle.compat import check_destination
    from guestcpu.lifecycle.documents import read_capture, read_pin

    if capture_files and binary is not None:
        if not _from_environment("binary"):
            raise InputError("give either --to HOST.json or --qemu PATH, not both")
        binary = None  # GUESTCPU_QEMU names this host's QEMU; a capture is the destination here
    pin = read_pin(pin_file)
    targets: list[tuple[Any, str | None, str]] = []
    for capture_file in capture_files:
        capture = read_capture(capture_file)
        caps, why = capture.caps(pin.abi.accel)
        targets.append((caps, why, f"{capture.hostname or capture_file} ({capture_file})"))
    if not capture_files:
        targets.append(_local_caps(binary, pin.abi.accel))
    verdicts = [
        check_destination(pin, caps, purpose=purpose, destination=destination, unavailable=why)
        for caps, why, destination in targets
    ]
    if as_json:
        if len(verdicts) == 1:
            emit_json(verdicts[0].to_json())
        else:
            emit_json({"ok": all(v.ok for v in verdicts), "destinations": [v.to_json() for v in verdicts]})
    else:
        for verdict in verdicts:
            click.echo(verdict.summary())
            for note in verdict.notes:
                click.echo(f"  note: {note}")
        refused = [v.destination for v in verdicts if not v.ok]
        if len(verdicts) > 1:
            click.echo(f"{len(verdicts) - len(refused)} of {len(verdicts)} destinations can give the pinned CPU"
                       + (f"; refused: {', '.join(refused)}" if refused else ""))
    if not all(v.ok for v in verdicts):
        raise SystemExit(EXIT_REFUSED)


def _from_environment(param: str) -> bool:
    """Whether ``param`` came from an environment variable rather than the command line."""
    from click.core import ParameterSource

    return click.get_current_context().get_parameter_source(param) is ParameterSource.ENVIRONMENT


def _local_caps(binary: str | None, accel: str) -> tuple[Any, str | None, str]:
    from guestcpu.qemu.cache import load_caps
    from guestcpu.qemu.probe import AccelUnavailableError
    from guestcpu.qemu.process import kvm_unusable_reason, resolve_binary

    path = resolve_binary(binary)
    destination = f"this host's {path}"
    try:
        return load_caps(path, accel).caps, None, destination
    except AccelUnavailableError as exc:
        return None, kvm_unusable_reason() or str(exc), destination


_check_options = [
    click.argument("pin_file", metavar="PIN.json"),
    click.option("--to", "capture_files", metavar="HOST.json", multiple=True,
                 help="A destination's capture ('guestcpu capture'); repeat for several, each is checked."),
    qemu_option,
    json_option,
]


def _with_check_options(func: Any) -> Any:
    for option in reversed(_check_options):
        func = option(func)
    return func


@click.command("migrate-check")
@_with_check_options
def migrate_check_cmd(pin_file: str, capture_files: tuple[str, ...], binary: str | None, as_json: bool) -> None:
    """Can a destination give exactly this guest's pinned CPU?  Refused (exit 2) naming every feature.

    The destination is a capture (--to HOST.json, repeatable: each is checked) or a local
    QEMU (--qemu PATH, default this host's).  The guest's pinned CPU is compared, never
    the source host's CPU.
    """
    _destination_check(pin_file, capture_files, binary, "migrate", as_json)


@click.command("restore-check")
@_with_check_options
def restore_check_cmd(pin_file: str, capture_files: tuple[str, ...], binary: str | None, as_json: bool) -> None:
    """Can a saved guest be restored there with exactly its pinned CPU?  Refused (exit 2) naming every feature."""
    _destination_check(pin_file, capture_files, binary, "restore", as_json)


# -- diff ---------------------------------------------------------------------------


@click.command("diff")
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.option("--pins", "pins_dir", metavar="DIR", help="With two captures: the pins (*.json) of guests to check "
              "against both, to list those that would no longer start or migrate.")
@json_option
def diff_cmd(old: str, new: str, pins_dir: str | None, as_json: bool) -> None:
    """ABI differences of two pins, or what changed between two captures of a host."""
    from guestcpu.lifecycle.capture import HostCapture
    from guestcpu.lifecycle.diff import diff_captures, diff_pins
    from guestcpu.lifecycle.documents import read_document
    from guestcpu.lifecycle.pin import Pin

    first, second = read_document(old), read_document(new)
    if isinstance(first, Pin) and isinstance(second, Pin):
        if pins_dir is not None:
            raise InputError("--pins goes with two captures, not two pins")
        result = diff_pins(first, second)
        if as_json:
            emit_json(result)
        else:
            _print_pin_diff(result)
        return
    if isinstance(first, HostCapture) and isinstance(second, HostCapture):
        pins = _read_pins_dir(pins_dir) if pins_dir is not None else []
        result = diff_captures(first, second, pins)
        if as_json:
            emit_json(result)
        else:
            _print_capture_diff(result, pins_dir is not None)
        return
    raise InputError(f"{old} and {new} are not of the same kind; diff two pins or two captures")


def _read_pins_dir(path: str) -> list[tuple[str, Any]]:
    from guestcpu.formats.files import read_json
    from guestcpu.lifecycle.documents import kind_of
    from guestcpu.lifecycle.pin import pin_from_document

    directory = Path(path)
    if not directory.is_dir():
        raise InputError(f"--pins {path}: not a directory")
    pins = []
    for file in sorted(directory.glob("*.json")):
        doc = read_json(str(file), "a pin")
        if kind_of(doc) == "pin":
            pins.append((file.stem, pin_from_document(doc, str(file))))
    if not pins:
        raise InputError(f"--pins {path}: no pins (*.json written by 'guestcpu define') found")
    return pins


def _print_pin_diff(result: dict[str, Any]) -> None:
    old_fp, new_fp = result["fingerprints"]
    if result["same_abi"]:
        click.echo(f"same ABI: {old_fp}")
        return
    click.echo(f"ABI differs: {old_fp} -> {new_fp}")
    for name, (a, b) in result["fields"].items():
        click.echo(f"  {name}: {a!r} -> {b!r}")
    features = result["features"]
    for key, label in (("now_required", "now required"), ("now_disabled", "now disabled")):
        if features[key]:
            click.echo(f"  features {label}: {', '.join(features[key])}")
    for key, label in (("only_in_old", "only in OLD"), ("only_in_new", "only in NEW")):
        if features[key]:
            click.echo(f"  features {label}: " + ", ".join(f"{n} ({p})" for n, p in features[key].items()))
    for name, (a, b) in result["props"].items():
        click.echo(f"  {name}: {a!r} -> {b!r}")


def _print_capture_diff(result: dict[str, Any], with_pins: bool) -> None:
    labels = (
        ("models_became_unusable", "models no longer usable"),
        ("models_became_usable", "models now usable"),
        ("models_removed", "models QEMU no longer has"),
        ("models_added", "models QEMU now has"),
        ("features_vanished", "features vanished"),
        ("features_appeared", "features appeared"),
        ("machines_removed", "machine types removed"),
        ("machines_added", "machine types added"),
    )
    if result["kernel"]:
        click.echo(f"kernel: {result['kernel'][0]} -> {result['kernel'][1]}")
    for accel, change in result["accels"].items():
        before, after = change["available"]
        if not (before and after):
            states = ["available" if flag else "unavailable" for flag in (before, after)]
            click.echo(f"{accel}: {states[0]} -> {states[1]}")
            continue
        lines = []
        if change["qemu_version"]:
            lines.append(f"  QEMU {change['qemu_version'][0]} -> {change['qemu_version'][1]}")
        for key, (a, b) in change["host_cpu"].items():
            lines.append(f"  host CPU {key}: {a!r} -> {b!r}")
        for key, label in labels:
            value = change[key]
            if not value:
                continue
            if isinstance(value, dict):
                text = ", ".join(f"{m} (blocked by {', '.join(b)})" for m, b in value.items())
            else:
                text = ", ".join(value)
            lines.append(f"  {label}: {text}")
        if change["blockers_changed"]:
            lines.append(f"  blockers changed for: {', '.join(change['blockers_changed'])}")
        click.echo(f"{accel}:" + ("" if lines else " no change"))
        for line in lines:
            click.echo(line)
    if not with_pins:
        return
    broken = [g for g in result["guests"] if g["no_longer"]]
    if not broken:
        click.echo(f"guests: all {len(result['guests'])} still start and migrate as before")
        return
    click.echo("guests that would no longer start or migrate:")
    for guest in broken:
        purpose = guest["no_longer"][0]
        reasons = "; ".join(guest["verdicts"][purpose]["reasons_after"])
        click.echo(f"  {guest['guest']} ({guest['fingerprint'][:19]}…): no longer {', '.join(guest['no_longer'])}: "
                   f"{reasons}")
