"""What every submit description has, whatever the target: the description and its options,
the job files, the notes, and :class:`DescriptionBuilder`, the base of each target's job
(:mod:`.runner_target`, :mod:`.vm_universe`): commands, file transfer, element names in notes,
``--append``, ``--batch-name`` and ``--strict``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath
from typing import Literal

from .. import jobcontract
from ..classads import classad_string, hypervisor_names, submit_safe
from ..errors import InputError, TargetError
from ..spec import Disk, VMSpec

Target = Literal["runner", "vm-universe"]
TARGETS: tuple[Target, ...] = ("runner", "vm-universe")
Level = Literal["note", "warning"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Note:
    """Something the translation dropped, defaulted or changed, naming the source element."""

    source: str
    message: str
    level: Level = "note"

    def one_line(self) -> str:
        return f"{self.level}: {self.source}: {self.message}"


@dataclass(frozen=True)
class JobFile:
    """A file the submit side writes into the job's folder before submitting: ``text`` or a copy of
    ``copy_of`` (the spec file, the user's domain XML)."""

    path: str
    text: str | None = None
    copy_of: str | None = None


@dataclass(frozen=True)
class TranslateOptions:
    """How to translate; every field has the command-line default."""

    target: Target = "runner"
    hypervisor: str | None = None          # overrides the source's; "any" matches any hypervisor
    runner: str = jobcontract.DEFAULT_RUNNER
    output_dir: str = "."                  # where the spec file, logs and job output go
    transfer_disks: bool = True
    strict: bool = False
    batch_name: str | None = None
    append: tuple[tuple[str, str], ...] = ()
    extra_input_files: tuple[str, ...] = ()
    queue: int = 1
    checkpoint_interval: int = jobcontract.DEFAULT_CHECKPOINT_INTERVAL_SECONDS  # seconds; 0: none
    capture_screen: float | None = None    # seconds between two frames of the guest's screen (None: off)


@dataclass(frozen=True)
class SubmitDescription:
    """Ordered submit commands, the files the job needs, and notes for the user."""

    commands: tuple[tuple[str, str], ...]
    input_files: tuple[str, ...] = ()
    notes: tuple[Note, ...] = ()
    job_files: tuple[JobFile, ...] = ()
    queue: int = 1

    def text(self) -> str:
        """The description in condor_submit syntax, ending with its queue statement."""
        lines = [f"{key} = {value}" for key, value in self.commands]
        lines.append("queue" if self.queue == 1 else f"queue {self.queue}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        """The JSON form printed by ``--dry-run --json``."""
        return {
            "commands": [[key, value] for key, value in self.commands],
            "queue": self.queue,
            "submit": self.text(),
            "input_files": list(self.input_files),
            "job_files": [job_file.path for job_file in self.job_files],
            "notes": [{"source": n.source, "level": n.level, "message": n.message} for n in self.notes],
        }


def classad_bool(value: bool) -> str:
    return "true" if value else "false"


def safe_file_stem(name: str) -> str:
    """A file-name-safe version of the VM name.

    >>> safe_file_stem("web server/01")
    'web_server_01'
    """
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._") or "vm"
    return stem[:64]


# --- the builder ------------------------------------------------------------------------------

_ELEMENTS = {
    "libvirt": {"disk": "<disk>", "nic": "<interface>", "share": "<filesystem>", "firmware": "<os>",
                "kernel": "<os><kernel>", "vcpu": "<vcpu>", "hypervisor": "<domain type>",
                "memory": "<memory>"},
    "ovf": {"disk": "disk Item", "nic": "ethernet Item", "share": "shared folder",
            "firmware": "firmware", "kernel": "kernel", "vcpu": "cpu Item",
            "hypervisor": "VirtualSystemType", "memory": "memory Item"},
}


class DescriptionBuilder:
    """Accumulates commands, notes and files while one spec is translated; a target's job adds its
    commands in :meth:`build`."""

    def __init__(self, spec: VMSpec, options: TranslateOptions):
        self.spec = spec
        self.options = options
        self.commands: list[tuple[str, str]] = []
        self.notes: list[Note] = []
        self.input_files: list[str] = []
        self.job_files: list[JobFile] = []

    # helpers

    def set(self, key: str, value: str | int) -> None:
        self.commands.append((key, str(value)))

    def attr(self, name: str, value: str | int | float | bool) -> None:
        """A custom job attribute (``MY.name``), quoted by type."""
        if isinstance(value, bool):
            text = classad_bool(value)
        elif isinstance(value, (int, float)):
            text = f"{value:g}"
        else:
            text = classad_string(value)
        self.set(f"MY.{name}", text)

    def note(self, source: str, message: str, level: Level = "note") -> None:
        self.notes.append(Note(source, message, level))

    def element(self, kind: str, index: int | None = None, detail: str | None = None) -> str:
        """How the user's file names the element: ``<disk> #2 (hdc)``."""
        names = _ELEMENTS.get(self.spec.source_format, {})
        text = names.get(kind, kind)
        if index is not None:
            text += f" #{index + 1}"
        if detail:
            text += f" ({detail})"
        return text

    def disk_element(self, index: int, disk: Disk) -> str:
        return self.element("disk", index, disk.target or disk.source)

    def resolve(self, path: str) -> str:
        """An input path made absolute against the source file's folder."""
        if PurePosixPath(path).is_absolute() or not self.spec.source_path:
            return path
        return str(PurePath(self.spec.source_path).parent / path)

    def transfer(self, path: str, what: str) -> None:
        if "," in path:
            raise InputError(f"{what}: cannot transfer a file whose name contains ',': {path}",
                             path=self.spec.source_path)
        if path not in self.input_files:
            self.input_files.append(path)

    @property
    def hypervisor(self) -> str:
        """The hypervisor the job asks for; several separated by commas mean any of them."""
        return ",".join(hypervisor_names(self.options.hypervisor or self.spec.hypervisor))

    @property
    def output_dir(self) -> str:
        return self.options.output_dir.rstrip("/") or "/"

    def out_path(self, name: str) -> str:
        return str(PurePosixPath(self.output_dir) / name)

    def describe(self) -> SubmitDescription:
        """The whole description: the target's commands, then what every description ends with."""
        self.build()
        self.finish()
        return self.result()

    def build(self) -> None:
        """The target's own commands, notes and files."""
        raise NotImplementedError

    # common end

    def finish(self) -> None:
        options = self.options
        self.check_sandbox_names()
        files = ",".join(submit_safe(path) for path in self.input_files)
        self.commands = [(k, files) if k == "transfer_input_files" else (k, v)
                         for k, v in self.commands if k != "transfer_input_files" or files]
        if options.batch_name:
            self.set("batch_name", submit_safe(options.batch_name))
        for key, value in options.append:
            self.append(key, value)
        for message in self.spec.warnings:
            self.note(self.spec.source_path or "input", message)
        if options.strict:
            losses = [note for note in self.notes if note.level == "warning"]
            if losses:
                more = f" (and {len(losses) - 1} more)" if len(losses) > 1 else ""
                raise TargetError(f"--strict: target {options.target} cannot express "
                                  f"{losses[0].source}: {losses[0].message}{more}",
                                  path=self.spec.source_path)

    def check_sandbox_names(self) -> None:
        """HTCondor transfers the input files into one flat sandbox folder (and ``vm_disk`` names them
        there): two different files with one base name would overwrite each other."""
        seen: dict[str, str] = {}
        for path in self.input_files:
            name = PurePosixPath(path).name
            if name in seen and seen[name] != path:
                raise InputError(f"two input files share the name '{name}' in the job's sandbox: "
                                 f"{seen[name]} and {path}", path=self.spec.source_path)
            seen[name] = path

    def append(self, key: str, value: str) -> None:
        """``--append KEY=VALUE``: replaces an existing command of that name, else adds one."""
        key = normalize_key(key)
        for index, (name, old) in enumerate(self.commands):
            if name.lower() == key.lower():
                self.commands[index] = (name, value)
                self.note(f"--append {key}", f"replaces '{old}'")
                return
        self.set(key, value)

    def result(self) -> SubmitDescription:
        return SubmitDescription(commands=tuple(self.commands), input_files=tuple(self.input_files),
                                 notes=tuple(self.notes), job_files=tuple(self.job_files),
                                 queue=self.options.queue)


_KEY = re.compile(r"^(\+|MY\.)?[A-Za-z_][A-Za-z0-9_.]*$", re.IGNORECASE)


def normalize_key(key: str) -> str:
    """A submit command name, ``+Attr`` spelled ``MY.Attr`` as condor_submit stores it.

    >>> normalize_key("+Project")
    'MY.Project'
    """
    key = key.strip()
    if not _KEY.match(key):
        raise InputError(f"'{key}' is not a submit command name")
    if key.lower() == "queue":
        raise InputError("the queue statement comes from --queue N")
    if key.startswith("+"):
        return "MY." + key[1:]
    if key[:3].lower() == "my.":
        return "MY." + key[3:]
    return key


def parse_append(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` (or ``KEY = VALUE``) strings as (key, value) pairs.

    >>> parse_append(["+Project = \\"vm\\"", "priority=5"])
    (('MY.Project', '"vm"'), ('priority', '5'))
    """
    pairs = []
    for item in items:
        key, equals, value = item.partition("=")
        if not equals:
            raise InputError(f"--append '{item}': expected KEY=VALUE")
        if "\n" in value:
            raise InputError(f"--append '{key.strip()}': a value cannot span lines")
        pairs.append((normalize_key(key), value.strip()))
    return tuple(pairs)
