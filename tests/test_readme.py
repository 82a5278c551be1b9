"""The README's layout table names every package of the source tree."""

from __future__ import annotations

from conftest import REPO


def test_the_layout_table_lists_every_package() -> None:
    readme = (REPO / "README.md").read_text()
    packages = sorted(init.parent.relative_to(REPO) for init in (REPO / "condor_vmsubmit").glob("*/**/__init__.py"))
    assert len(packages) >= 7
    for package in packages:
        if package.parent.name != "formats":  # formats/ovf/ is named in the formats/ row
            assert f"| `{package}/`" in readme, f"README.md's layout table does not list {package}/"
    assert "`ovf/` subpackage" in readme
