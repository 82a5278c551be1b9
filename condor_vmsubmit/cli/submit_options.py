"""The options every submit frontend shares, and what they do with a spec.

A frontend reads its format into a :class:`VMSpec` and hands it over::

    @click.command(context_settings=CONTEXT_SETTINGS)
    @click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
    @submit_options
    @reports_errors
    def main(file: Path, options: SubmitOptions) -> None:
        submit_spec(load(file, "libvirt"), options)

HTCondor users type ``-name``, ``-pool``, ``-dry-run``: every long option also has
its single-dash spelling.
"""

from __future__ import annotations

import functools
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import jobcontract
from ..classads import hypervisor_names
from ..errors import InputError, PolicyRejected, SafetyRefused, VMSubmitError
from ..media import with_media
from ..shared_folders import add_shares
from ..spec import VMSpec
from ..staged import add_image
from ..translate import TARGETS, SubmitDescription, Target, TranslateOptions, parse_append, safe_file_stem, translate

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_CAPTURE_SECONDS = 5.0


@dataclass(frozen=True)
class SubmitOptions:
    """The shared command-line options, as one value."""

    dry_run: bool = False
    as_json: bool = False
    target: Target = "runner"
    hypervisor: str | None = None
    name: str | None = None
    pool: str | None = None
    spool: bool = False
    queue: int = 1
    batch_name: str | None = None
    append: tuple[tuple[str, str], ...] = ()
    output_dir: Path | None = None
    strict: bool = False
    no_transfer_disks: bool = False
    local: bool = False
    cdroms: tuple[Path, ...] = ()
    floppies: tuple[Path, ...] = ()
    cdrom_from: tuple[Path, ...] = ()
    shares: tuple[str, ...] = ()
    image: str | None = None
    policies: tuple[Path, ...] = ()
    checkpoint_interval: int = jobcontract.DEFAULT_CHECKPOINT_INTERVAL_SECONDS
    capture_screen: float | None = None


def _append_pairs(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple:
    try:
        return parse_append(value)
    except InputError as error:
        raise click.BadParameter(error.message) from None


def _hypervisor(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """One hypervisor name, or several separated by commas (any of them)."""
    if value is None:
        return None
    names = [name.strip().lower() for name in value.split(",")]
    for name in names:
        if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
            raise click.BadParameter(f"'{name or value}' is not a hypervisor name such as kvm, qemu, xen or any")
    return ",".join(hypervisor_names(",".join(names)))


_OPTIONS = (
    click.option("--dry-run", "-dry-run", "dry_run", is_flag=True,
                 help="Print the submit description; contact nothing."),
    click.option("--json", "-json", "as_json", is_flag=True,
                 help="With --dry-run: print the description, files and notes as JSON."),
    click.option("--target", "-target", type=click.Choice(TARGETS), default="runner", show_default=True,
                 help="runner: vanilla job run by condor_vm_runner; vm-universe: stock universe = vm."),
    click.option("--hypervisor", "-hypervisor", callback=_hypervisor, metavar="NAME[,NAME...]",
                 help="Hypervisor to match (kvm, qemu, xen, a script-managed one, or any); several "
                      "separated by commas: any of them (kvm,qemu)."),
    click.option("--name", "-name", metavar="SCHEDD", help="Submit to this schedd."),
    click.option("--pool", "-pool", metavar="HOST[:PORT]", help="Find the schedd through this collector."),
    click.option("--spool", "-spool", is_flag=True, help="Spool the input files to the schedd."),
    click.option("--queue", "-queue", type=click.IntRange(min=1), default=1, show_default=True,
                 metavar="N", help="Submit N copies in one transaction."),
    click.option("--batch-name", "-batch-name", metavar="NAME", help="Batch name shown by condor_q."),
    click.option("--append", "-append", "-a", multiple=True, metavar="KEY=VALUE", callback=_append_pairs,
                 help="Add or replace a submit command (repeatable), like condor_submit -append."),
    click.option("--output-dir", "-output-dir", type=click.Path(path_type=Path, file_okay=False),
                 help="Where the spec file, logs and job output go [default: ./NAME.vmjob]."),
    click.option("--strict", "-strict", is_flag=True,
                 help="Refuse instead of warn when the target cannot express the VM."),
    click.option("--no-transfer-disks", "-no-transfer-disks", is_flag=True,
                 help="Leave disks in place: they are already on the execute nodes at these paths."),
    click.option("--local", "-local", is_flag=True,
                 help="Run the VM on this machine through the runner, without a pool."),
    click.option("--cdrom", "-cdrom", "cdroms", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
                 metavar="ISO", help="An ISO image in a cdrom drive of its own (repeatable)."),
    click.option("--floppy", "-floppy", "floppies", multiple=True,
                 type=click.Path(path_type=Path, dir_okay=False), metavar="IMG",
                 help="A raw floppy image in a floppy drive (repeatable, at most 2)."),
    click.option("--cdrom-from", "-cdrom-from", "cdrom_from", multiple=True,
                 type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
                 help="Build an ISO of DIR into the output folder and put it in a cdrom drive (repeatable)."),
    click.option("--share", "-share", "shares", multiple=True, metavar="DIR[:TAG][:ro]",
                 help="Share DIR with the guest under TAG (repeatable); it comes back as output unless ro."),
    click.option("--image", "-image", metavar="NAME",
                 help="Boot from the image NAME an admin staged on execute nodes (VM_IMAGES); not transferred."),
    click.option("--policy", "-policy", "policies", multiple=True,
                 type=click.Path(path_type=Path, dir_okay=False, exists=True), metavar="XSL",
                 help="Check the VM against this admin policy stylesheet first, as the execute node would "
                      "(repeatable); a rejection stops here (exit 5)."),
    click.option("--checkpoint-interval", "-checkpoint-interval", type=click.IntRange(min=0), metavar="SECONDS",
                 default=jobcontract.DEFAULT_CHECKPOINT_INTERVAL_SECONDS, show_default=True,
                 help="Save the running guest this often (0: only on eviction); the execute node may "
                      "bound it. A node lost outright costs the work since the last save."),
    click.option("--capture-screen", "-capture-screen", "capture_screen", type=click.FloatRange(min=1.0),
                 is_flag=False, flag_value=DEFAULT_CAPTURE_SECONDS, default=None, metavar="[SECONDS]",
                 help=f"Capture the guest's screen every SECONDS (default {DEFAULT_CAPTURE_SECONDS:g}) into "
                      f"{jobcontract.SCREEN_DIR}/, and a video of it where the node has ffmpeg."),
)
_FIELDS = tuple(f.name for f in fields(SubmitOptions))


def submit_options(function: F) -> F:
    """Add the shared options to a click command; it receives them as ``options``."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        options = SubmitOptions(**{key: kwargs.pop(key) for key in _FIELDS})
        return function(*args, options=options, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def submit_spec(spec: VMSpec, options: SubmitOptions, extra_input_files: Iterable[str | Path] = ()) -> None:
    """Translate ``spec``; print it (--dry-run), run it here (--local) or submit it."""
    extra = tuple(str(Path(path).absolute()) for path in extra_input_files)
    if options.local and not options.dry_run:
        sys.exit(_run_local(spec, options, extra))
    output_dir = (options.output_dir or Path.cwd() / f"{safe_file_stem(spec.name)}.vmjob").absolute()
    spec, isos = _with_media(spec, options, output_dir)
    runner = None
    if not options.dry_run and options.target == "runner":
        from ..submit import configured_runner

        runner = configured_runner()
    description = translate(spec, _translate_options(options, output_dir, extra, runner))
    _check_vm(spec, options, description)
    if not options.as_json:
        _print_notes(description)
    _build_isos(isos, options, output_dir)
    if options.dry_run:
        _dry_run(description, options, output_dir)
        return
    _check_inputs(description)
    _make_dir(output_dir)
    write_job_files(description)
    from ..submit import submit

    result = submit(description.text(), count=options.queue, spool=options.spool,
                    name=options.name, pool=options.pool)
    for warning in result.warnings:
        click.echo(f"{_prog()}: warning: {warning}", err=True)
    if options.as_json:
        import json

        click.echo(json.dumps({"cluster": result.cluster, "count": result.count,
                               "output_dir": str(output_dir), "notes": description.to_dict()["notes"]}))
    else:
        click.echo(f"Submitting job(s){'.' * result.count}\n"  # as condor_submit prints it
                   f"{result.count} job(s) submitted to cluster {result.cluster}.")


def _translate_options(options: SubmitOptions, output_dir: Path, extra: tuple[str, ...],
                       runner: str | None) -> TranslateOptions:
    base = TranslateOptions(
        target=options.target, hypervisor=options.hypervisor, output_dir=str(output_dir),
        transfer_disks=not options.no_transfer_disks, strict=options.strict,
        batch_name=options.batch_name, append=options.append, extra_input_files=extra,
        queue=options.queue, checkpoint_interval=options.checkpoint_interval,
        capture_screen=options.capture_screen,
    )
    return replace(base, runner=runner) if runner else base


def _with_media(spec: VMSpec, options: SubmitOptions, output_dir: Path) -> tuple[VMSpec, dict[Path, Path]]:
    spec = add_shares(spec, options.shares)
    if options.image:
        spec = add_image(spec, options.image)
    return with_media(spec, cdroms=options.cdroms, floppies=options.floppies, cdrom_from=options.cdrom_from,
                      output_dir=output_dir, transfer_disks=not options.no_transfer_disks)


def _build_isos(isos: dict[Path, Path], options: SubmitOptions, output_dir: Path) -> None:
    """Build the --cdrom-from ISOs; a dry run builds them only when --output-dir says where."""
    if isos and options.dry_run and options.output_dir is None:
        names = ", ".join(iso.name for iso in isos.values())
        click.echo(f"{_prog()}: note: {names} would be built in {output_dir} (dry run: nothing written)", err=True)
        return
    from ..isobuild import build_iso  # only when there is something to build

    for folder, iso in isos.items():
        _make_dir(output_dir)
        built = build_iso(folder, iso)
        if not options.as_json:
            click.echo(f"{_prog()}: note: --cdrom-from {folder}: built {iso} ({built.files} files, "
                       f"label '{built.label}')", err=True)


def _dry_run(description: SubmitDescription, options: SubmitOptions, output_dir: Path) -> None:
    if options.output_dir is not None:
        _make_dir(output_dir)
        write_job_files(description)
    elif description.job_files:
        names = ", ".join(Path(f.path).name for f in description.job_files)
        click.echo(f"{_prog()}: note: {names} would be written to {output_dir} (dry run: nothing written)",
                   err=True)
    if options.as_json:
        import json

        click.echo(json.dumps(description.to_dict(), indent=2))
    else:
        click.echo(description.text(), nl=False)


def write_job_files(description: SubmitDescription) -> None:
    """Write the spec file and the copy of the user's XML where the description names them."""
    for job_file in description.job_files:
        path = Path(job_file.path)
        try:
            if job_file.copy_of is not None:
                shutil.copyfile(job_file.copy_of, path)
            else:
                path.write_text(job_file.text or "")
        except OSError as error:
            raise InputError(f"cannot write: {error.strerror}", path=path) from None


def _make_dir(path: Path) -> None:
    """The output directory: initialdir, where logs and output come back (condor_submit wants it)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the output directory: {error.strerror}", path=path) from None


def _check_inputs(description: SubmitDescription) -> None:
    """Every file the job transfers exists now (the shadow would fail much later)."""
    written = {f.path for f in description.job_files}
    for path in description.input_files:
        if path not in written and not Path(path).is_file() and not Path(path).is_dir():
            raise InputError("input file not found (use --no-transfer-disks for disks already on the execute nodes)",
                             path=path)


def _run_local(spec: VMSpec, options: SubmitOptions, extra: tuple[str, ...]) -> int:
    """Copy the job's files into a temporary folder and run the runner here."""
    with tempfile.TemporaryDirectory(prefix="vmsubmit-local-") as folder:
        output_dir = options.output_dir.absolute() if options.output_dir else Path(folder)
        spec, isos = _with_media(spec, options, output_dir)
        if spec.shared_folders:
            raise InputError("--local does not take shared folders yet (--share or <filesystem>): it copies "
                             "files, not folders; submit the job instead")
        local = replace(options, target="runner")
        description = translate(spec, _translate_options(local, output_dir, extra, None))
        _check_vm(spec, local, description)
        _build_isos(isos, options, output_dir)
        _print_notes(description, only_warnings=True)  # request_* notes mean nothing here
        _check_inputs(description)
        _make_dir(output_dir)
        write_job_files(description)
        try:
            from ..runner.local import run_local
        except ImportError as error:  # the runner's libvirt-python is an optional extra
            raise VMSubmitError(f"--local needs the execute-side parts (pip install "
                                f"'condor_vmsubmit[execute]'): {error}") from None
        return run_local(spec, list(description.input_files), capture_screen=options.capture_screen,
                         screen_to=options.output_dir.absolute() if options.output_dir else Path.cwd())


def _check_vm(spec: VMSpec, options: SubmitOptions, description: SubmitDescription) -> None:
    """The execute side's checks, before anything is written or submitted: with --policy, the verdict
    of those stylesheets; for the runner target, the safety rules, whose file rules see the files
    ``description`` transfers.  (The stock VM universe never sees the user's XML: HTCondor writes its own.)"""
    if not options.policies and options.target != "runner":
        return
    from ..checks.policy import Policy
    from ..checks.preflight import preflight_spec

    checked = preflight_spec(spec, Policy(stylesheets=options.policies), description.input_files, node_settings=False)
    result = checked.policy
    if result.verdict == "rejected":
        raise PolicyRejected(f"admin policy rejects the VM: {result.reason}", path=spec.source_path)
    if options.policies:
        verdict = "accepted" if result.verdict == "accepted" else f"modified: {result.summary()}"
        click.echo(f"{_prog()}: policy: {verdict}", err=True)
    if checked.refusals and options.target == "runner":
        raise SafetyRefused(checked.refusals, path=spec.source_path)


def _print_notes(description: SubmitDescription, only_warnings: bool = False) -> None:
    for note in description.notes:
        if only_warnings and note.level != "warning":
            continue
        click.echo(f"{_prog()}: {note.one_line()}", err=True)


def _prog() -> str:
    context = click.get_current_context(silent=True)
    return (context.find_root().info_name if context else None) or "condor_vmsubmit"

