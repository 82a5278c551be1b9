"""Boot-probe an accelerator: does a guest CPU really run under ``qemu-system -accel X``?

``/dev/kvm`` existing proves nothing (on the test machines a KVM guest hangs right
after the BIOS, when it switches to protected mode).  The probe boots a 64 KiB
firmware of our own that walks the CPU through the same transitions every OS makes
-- real mode, protected mode, long mode with paging -- writing one letter to the
serial port at each stage, then asks QEMU to exit through the ``isa-debug-exit``
device.  Under TCG it takes about 0.1 s; a healthy KVM is as fast; a broken one
hangs until the timeout, and the letters say where.

The firmware source (GNU as, assembled once; the bytes below are its listing)::

    .code16                          # CPU resets at 0xFFFFFFF0; we jump to F000:0000
    start16: mov $0x3f8,%dx; mov $'R',%al; out %al,%dx
             lgdtl %cs:gdtdesc; set CR0.PE; ljmpl $0x08,$start32
    .code32
    start32: load 0x10 into ds/es/ss; out 'P'
             zero 16 KiB at 0x1000; PML4[0] -> PDPT, PDPT[0] -> PD(low 2 MiB),
             PDPT[3] -> PD(high), PD(high)[511] maps the ROM at 0xFFE00000 (2 MiB pages)
             CR3 = 0x1000; CR4.PAE; EFER.LME; CR0.PG; ljmpl $0x18,$start64
    .code64
    start64: out 'L'; out 0x10 to port 0xf4 (QEMU exits with status 0x10 << 1 | 1 = 33)
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

ROM_SIZE = 0x10000          # QEMU wants a -bios image whose size is a multiple of 64 KiB
EXIT_STATUS_OK = 33          # isa-debug-exit: (0x10 << 1) | 1
PROBE_TIMEOUT = 0.8          # seconds; a working accelerator answers in about 0.1 s

# (bytes, instruction) pairs, in order from offset 0 of the ROM.
_CODE = (
    ("ba f8 03", "mov $0x3f8, %dx"),
    ("b0 52", "mov $'R', %al"),
    ("ee", "out %al, %dx"),
    ("2e 66 0f 01 16 d0 00", "lgdtl %cs:gdtdesc"),
    ("0f 20 c0", "mov %cr0, %eax"),
    ("66 83 c8 01", "or $1, %eax  (PE)"),
    ("0f 22 c0", "mov %eax, %cr0"),
    ("66 ea 1f 00 ff ff 08 00", "ljmpl $0x08, $0xffff001f  (start32)"),
    ("66 b8 10 00", "mov $0x10, %ax"),
    ("8e d8", "mov %ax, %ds"),
    ("8e c0", "mov %ax, %es"),
    ("8e d0", "mov %ax, %ss"),
    ("b0 50", "mov $'P', %al"),
    ("ee", "out %al, %dx"),
    ("31 c0", "xor %eax, %eax"),
    ("bf 00 10 00 00", "mov $0x1000, %edi"),
    ("b9 00 10 00 00", "mov $0x1000, %ecx"),
    ("f3 ab", "rep stosl"),
    ("c7 05 00 10 00 00 03 20 00 00", "movl $0x2003, 0x1000  (PML4[0])"),
    ("c7 05 00 20 00 00 03 30 00 00", "movl $0x3003, 0x2000  (PDPT[0])"),
    ("c7 05 18 20 00 00 03 40 00 00", "movl $0x4003, 0x2018  (PDPT[3])"),
    ("c7 05 00 30 00 00 83 00 00 00", "movl $0x83, 0x3000  (2 MiB at 0)"),
    ("c7 05 f8 4f 00 00 83 00 e0 ff", "movl $0xffe00083, 0x4ff8  (2 MiB at 0xffe00000)"),
    ("b8 00 10 00 00", "mov $0x1000, %eax"),
    ("0f 22 d8", "mov %eax, %cr3"),
    ("0f 20 e0", "mov %cr4, %eax"),
    ("83 c8 20", "or $0x20, %eax  (PAE)"),
    ("0f 22 e0", "mov %eax, %cr4"),
    ("b9 80 00 00 c0", "mov $0xc0000080, %ecx  (EFER)"),
    ("0f 32", "rdmsr"),
    ("0d 00 01 00 00", "or $0x100, %eax  (LME)"),
    ("0f 30", "wrmsr"),
    ("0f 20 c0", "mov %cr0, %eax"),
    ("0d 00 00 00 80", "or $0x80000000, %eax  (PG)"),
    ("0f 22 c0", "mov %eax, %cr0"),
    ("ea 9d 00 ff ff 18 00", "ljmpl $0x18, $0xffff009d  (start64)"),
    ("66 ba f8 03", "mov $0x3f8, %dx"),
    ("b0 4c", "mov $'L', %al"),
    ("ee", "out %al, %dx"),
    ("66 ba f4 00", "mov $0xf4, %dx"),
    ("b0 10", "mov $0x10, %al"),
    ("ee", "out %al, %dx  (isa-debug-exit)"),
    ("f4", "1: hlt"),
    ("eb fd", "jmp 1b"),
    ("66 90", "nop  (align 8)"),
    ("00 00 00 00 00 00 00 00", "gdt: null descriptor"),
    ("ff ff 00 00 00 9a cf 00", "0x08: 32-bit code, base 0, 4 GiB"),
    ("ff ff 00 00 00 92 cf 00", "0x10: data, base 0, 4 GiB"),
    ("ff ff 00 00 00 9a af 00", "0x18: 64-bit code"),
    ("1f 00 b0 00 ff ff", "gdtdesc: limit 31, base 0xffff00b0"),
)
_RESET = ("ea 00 00 00 f0", "ljmp $0xf000, $0  (at 0xfff0, the reset vector)")

# What the serial letters tell about a hung guest.
_STAGE_REACHED = {
    "": "before its first instruction",
    "R": "entering protected mode",
    "RP": "entering long mode",
    "RPL": "after reaching long mode",
}


def probe_rom() -> bytes:
    """The 64 KiB firmware image.

    >>> rom = probe_rom()
    >>> len(rom), rom[0xfff0:0xfff5].hex(" ")
    (65536, 'ea 00 00 00 f0')
    >>> rom[0xd0:0xd6].hex(" ")  # gdtdesc sits where the lgdt operand says
    '1f 00 b0 00 ff ff'
    """
    code = bytes.fromhex("".join(hexbytes for hexbytes, _ in _CODE))
    reset = bytes.fromhex(_RESET[0])
    return code + bytes(0xFFF0 - len(code)) + reset + bytes(ROM_SIZE - 0xFFF0 - len(reset))


@dataclass(frozen=True)
class ProbeResult:
    """Whether a guest ran to the end under the accelerator, what was seen, and whether it was
    still running when the time was up."""

    ok: bool
    detail: str
    timed_out: bool = False


def probe_command(emulator: str, accel: str, rom: Path) -> list[str]:
    """The QEMU command line that boots the probe firmware and nothing else."""
    return [emulator, "-accel", accel, "-machine", "pc", "-m", "16", "-nodefaults", "-no-user-config",
            "-display", "none", "-bios", str(rom), "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=1"]


def interpret(accel: str, status: int | None, serial: str, stderr: str) -> ProbeResult:
    """Judge one probe run (``status`` None means it was killed at the timeout).

    >>> interpret("kvm", None, "R", "")
    ProbeResult(ok=False, detail='kvm guest hung entering protected mode', timed_out=True)
    >>> interpret("tcg", 33, "RPL", "")
    ProbeResult(ok=True, detail='tcg guest reached long mode', timed_out=False)
    >>> interpret("kvm", 1, "", "qemu-system-x86_64: failed to initialize kvm: Permission denied\\n").detail
    'qemu-system-x86_64: failed to initialize kvm: Permission denied'
    """
    if status == EXIT_STATUS_OK and serial == "RPL":
        return ProbeResult(True, f"{accel} guest reached long mode")
    if status is None:
        where = _STAGE_REACHED.get(serial, f"after printing {serial!r}")
        return ProbeResult(False, f"{accel} guest hung {where}", timed_out=True)
    errors = [line for line in stderr.splitlines() if line.strip() and "warning:" not in line]
    reason = errors[-1].strip() if errors else f"exit status {status}, serial {serial!r}"
    return ProbeResult(False, reason)


def boot_probe(emulator: str, accel: str, rom: Path, timeout: float = PROBE_TIMEOUT) -> ProbeResult:
    """Boot the probe firmware (already written to ``rom``) under ``accel``; never longer than ``timeout``."""
    try:
        done = subprocess.run(probe_command(emulator, accel, rom), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as hung:
        return interpret(accel, None, _text(hung.stdout), _text(hung.stderr))
    except OSError as error:
        return ProbeResult(False, f"cannot run {emulator}: {error.strerror}")
    return interpret(accel, done.returncode, _text(done.stdout), _text(done.stderr))


def _text(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""
