"""Hardened XML parsing: hostile documents are refused without reading files, the
network or memory, and every failure is one line naming the file and line.

The last tests run the installed ``condor_vmsubmit`` console script, as a user would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from condor_vmsubmit.errors import InputError, UnsafeInputError
from condor_vmsubmit.xmlsafe import MAX_XML_BYTES, parse_bytes, parse_file

DOMAIN_TAIL = "<domain type='kvm'><name>{name}</name><memory>1024</memory></domain>\n"

# Nine levels of ten references each: 10^8 "lol"s from a few hundred bytes.
LAUGH_LEVELS = "\n".join(
    f' <!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 2 else "") + ";") * 10}">' for n in range(2, 10))
BILLION_LAUGHS = (f'<?xml version="1.0"?>\n<!DOCTYPE domain [\n <!ENTITY lol "lol">\n{LAUGH_LEVELS}\n]>\n'
                  + DOMAIN_TAIL.format(name="&lol9;"))


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-CONTENT\n")
    return path


@pytest.fixture
def listener():
    """A local TCP port that counts the connections made to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def write(tmp_path: Path, text: str, name: str = "domain.xml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_external_entity_naming_a_real_file_is_not_read(tmp_path: Path, secret: Path) -> None:
    path = write(tmp_path, f'<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
                 + DOMAIN_TAIL.format(name="&xxe;"))
    with pytest.raises(UnsafeInputError) as caught:
        parse_file(path)
    assert "TOP-SECRET" not in caught.value.one_line()
    assert caught.value.one_line() == f"{path}:1: XML declares entities in a DTD; refusing to expand them"


def test_parameter_entity_pulling_a_dtd_is_refused(tmp_path: Path) -> None:
    dtd = write(tmp_path, '<!ENTITY leak "LEAKED">', "evil.dtd")
    path = write(tmp_path, f'<!DOCTYPE domain [<!ENTITY % p SYSTEM "file://{dtd}"> %p;]>\n'
                 + DOMAIN_TAIL.format(name="&leak;"))
    with pytest.raises(UnsafeInputError):
        parse_file(path)


def test_external_dtd_is_refused_not_loaded(tmp_path: Path) -> None:
    dtd = write(tmp_path, '<!ENTITY leak "LEAKED">', "evil.dtd")
    path = write(tmp_path, f'<!DOCTYPE domain SYSTEM "file://{dtd}">\n' + DOMAIN_TAIL.format(name="&leak;"))
    with pytest.raises(UnsafeInputError, match="external DTD"):
        parse_file(path)


def test_no_network_access_for_entities_or_dtds(tmp_path: Path, listener) -> None:
    port, connections = listener
    documents = [
        f'<!DOCTYPE domain [<!ENTITY x SYSTEM "http://127.0.0.1:{port}/x">]>' + DOMAIN_TAIL.format(name="&x;"),
        f'<!DOCTYPE domain SYSTEM "http://127.0.0.1:{port}/domain.dtd">' + DOMAIN_TAIL.format(name="n"),
        f'<!DOCTYPE domain [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p"> %p;]>' + DOMAIN_TAIL.format(name="n"),
    ]
    for text in documents:
        with pytest.raises(UnsafeInputError):
            parse_bytes(text.encode(), "net.xml")
    assert connections == []


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    path = write(tmp_path, BILLION_LAUGHS)
    with pytest.raises(UnsafeInputError) as caught:
        parse_file(path)
    assert caught.value.path == str(path)


def test_small_entity_declarations_are_refused_too() -> None:
    text = '<!DOCTYPE domain [<!ENTITY n "web">]>' + DOMAIN_TAIL.format(name="&n;")
    with pytest.raises(UnsafeInputError):
        parse_bytes(text.encode(), "small.xml")


def test_doctype_without_entities_is_fine() -> None:
    root = parse_bytes(b"<!DOCTYPE domain>\n" + DOMAIN_TAIL.format(name="web").encode(), "ok.xml")
    assert root.findtext("name") == "web"


def test_oversized_input_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.xml"
    with open(path, "wb") as handle:
        handle.write(b"<domain><name>")
        handle.truncate(MAX_XML_BYTES + 10)
    with pytest.raises(UnsafeInputError, match="larger than"):
        parse_file(path)


@pytest.mark.parametrize("text, line, what", [
    ("<domain>\n<name>x</name>\n<memory>1\n</domain>\n", 4, "Opening and ending tag mismatch"),
    ("<domain>\n<name>x</name>\n", 3, "Premature end of data"),
    ("", 1, "Document is empty"),
    ("<domain>\n\n<name a='1' a='2'/></domain>", 3, "Attribute a redefined"),
])
def test_malformed_xml_names_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        parse_file(path)
    assert caught.value.one_line().startswith(f"{path}:{line}: malformed XML: {what}")
    assert not isinstance(caught.value, UnsafeInputError)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read: No such file"):
        parse_file(tmp_path / "missing.xml")


def run_inspect(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(["condor_vmsubmit", "inspect", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("case, code", [("xxe", 4), ("laughs", 4), ("external_dtd", 4), ("oversized", 4),
                                        ("malformed", 3), ("not_a_domain", 3)])
def test_cli_prints_one_line_and_exit_code_never_a_traceback(tmp_path: Path, secret: Path, case: str,
                                                             code: int) -> None:
    texts = {
        "xxe": f'<!DOCTYPE domain [<!ENTITY x SYSTEM "file://{secret}">]>' + DOMAIN_TAIL.format(name="&x;"),
        "laughs": BILLION_LAUGHS,
        "external_dtd": f'<!DOCTYPE domain SYSTEM "file://{secret}">' + DOMAIN_TAIL.format(name="n"),
        "malformed": "<domain type='kvm'>\n  <name>web</name>\n  <memory>1024</memory\n</domain>\n",
        "not_a_domain": "<?xml version='1.0'?>\n<network><name>default</name></network>\n",
    }
    path = write(tmp_path, texts.get(case, "<domain><name>"), f"{case}.xml")
    if case == "oversized":
        os.truncate(path, MAX_XML_BYTES + 1)  # sparse: cheap to make, but over the limit
    result = run_inspect(path)
    assert result.returncode == code
    assert result.stdout == ""
    assert result.stderr.startswith(f"condor_vmsubmit: error: {path}:")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "TOP-SECRET" not in result.stderr
