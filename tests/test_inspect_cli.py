"""``condor_vmsubmit inspect``: the rich summary, ``--json``, ``--validate`` against
libvirt's RelaxNG schema, and one-line errors with their exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from condor_vmsubmit.cli.main import main
from condor_vmsubmit.errors import InputError
from condor_vmsubmit.formats import libvirt
from condor_vmsubmit.xmlsafe import parse_file

from conftest import REPO, corpus_folder, expected

WEBSERVER = REPO / "examples" / "libvirt" / "webserver.xml"
MINIMAL = REPO / "examples" / "libvirt" / "minimal.xml"
RNG_INVALID = "libvirt-9.0.0__genericxml2xmlindata__graphics-listen-network-invalid.xml"
needs_rng = pytest.mark.skipif(not libvirt.RNG_PATH.exists(), reason=f"{libvirt.RNG_PATH} not installed")


def inspect(*args: str | Path) -> tuple[int, str, str]:
    """Run ``condor_vmsubmit inspect ARGS`` in process on a 200-column terminal."""
    result = CliRunner().invoke(main, ["inspect", *map(str, args)], prog_name="condor_vmsubmit",
                                env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_summary_shows_the_facts() -> None:
    code, out, err = inspect(WEBSERVER)
    assert (code, err) == (0, "")
    for fact in ("web01", "4 (current 2)", "4 GiB (4294967296 bytes)", "efi", "x86_64 q35", "host-model",
                 "/var/lib/libvirt/images/web01-system.qcow2", "qcow2", "sata", "52:54:00:6b:3c:01",
                 "network: default", "bridge: br0"):
        assert fact in out, fact
    nic_rows = [[cell.strip() for cell in line.split("│") if cell.strip()]
                for line in out.splitlines() if "52:54:00:6b:3c:0" in line]
    assert [row[-1] for row in nic_rows] == ["up", "down"]


def test_summary_prints_input_text_literally_never_as_markup(tmp_path: Path) -> None:
    path = tmp_path / "markup.xml"
    path.write_text("<domain type='kvm'><name>[bold]web[/bold]</name><memory>1024</memory><devices>"
                    "<disk type='block'><source dev='/dev/[red]x'/><target dev='vda'/></disk></devices></domain>")
    code, out, _ = inspect(path)
    assert code == 0
    assert "[bold]web[/bold]" in out and "[block] /dev/[red]x" in out


def test_json_is_the_spec() -> None:
    code, out, _ = inspect("--json", WEBSERVER)
    assert code == 0
    assert json.loads(out) == json.loads(libvirt.load(WEBSERVER).to_json())
    assert json.loads(out)["nics"][1]["link"] == "down"


@needs_rng
def test_validate_accepts_the_examples() -> None:
    for example in sorted((REPO / "examples" / "libvirt").glob("*.xml")):
        assert inspect("--validate", "--json", example)[0] == 0, example


@needs_rng
def test_validate_names_the_device_libvirt_refuses() -> None:
    path = corpus_folder("libvirt") / RNG_INVALID
    code, out, err = inspect("--validate", path)
    assert (code, out) == (3, "")
    assert err == (f"condor_vmsubmit: error: {path}:21: not valid against domain.rng: "
                   "<graphics> in <devices> does not match libvirt's schema\n")


def test_validate_without_libvirt_schema_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "schemas" / "domain.rng"
    monkeypatch.setattr(libvirt, "RNG_PATH", missing)
    code, out, err = inspect("--validate", MINIMAL)
    assert (code, out) == (3, "")
    assert err == (f"condor_vmsubmit: error: {MINIMAL}: cannot validate: libvirt's RelaxNG schema {missing} "
                   "is not installed (Debian package libvirt0)\n")
    assert inspect(MINIMAL)[0] == 0  # without --validate the schema is not needed


@needs_rng
def test_relaxng_verdict_agrees_with_libvirts_own_check_on_the_corpus() -> None:
    folder = corpus_folder("libvirt")
    disagreements = []
    for name, facts in expected("libvirt").items():
        root = parse_file(folder / name)
        try:
            libvirt.validate_rng(root, folder / name)
            valid = True
        except InputError:
            valid = False
        if valid != facts["rng_valid"]:
            disagreements.append(name)
    assert not disagreements


@needs_rng
def test_schema_is_compiled_once_per_process() -> None:
    assert libvirt._relaxng(str(libvirt.RNG_PATH)) is libvirt._relaxng(str(libvirt.RNG_PATH))


def test_ovf_options_on_libvirt_xml_are_refused_not_ignored() -> None:
    code, out, err = inspect("--profile", "large", WEBSERVER)
    assert (code, out) == (3, "")
    assert err == (f"condor_vmsubmit: error: {WEBSERVER}: profile: only for OVF appliances, "
                   "and this is libvirt domain XML\n")


@pytest.mark.parametrize("args, code, message", [
    (["/nonexistent/domain.xml"], 3, "/nonexistent/domain.xml: cannot read: No such file or directory"),
    (["--validate", "CORPUS/" + RNG_INVALID], 3, "not valid against domain.rng"),
    (["--json", "EXAMPLE"], 0, None),
])
def test_console_script(args: list[str], code: int, message: str | None) -> None:
    """The installed ``condor_vmsubmit`` as users run it: exit code, one line, no traceback."""
    args = [a.replace("CORPUS", str(corpus_folder("libvirt"))).replace("EXAMPLE", str(MINIMAL)) for a in args]
    result = subprocess.run(["condor_vmsubmit", "inspect", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == code
    if message is None:
        assert json.loads(result.stdout)["name"] == "minimal" and result.stderr == ""
    else:
        assert result.stdout == "" and "Traceback" not in result.stderr
        assert result.stderr.startswith("condor_vmsubmit: error: ") and result.stderr.count("\n") == 1
        assert message in result.stderr
