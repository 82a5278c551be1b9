"""Shared fixtures: where the real-world corpus lives, and markers that skip with a reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("VMSUBMIT_CORPUS", REPO.parent / "shared" / "corpus"))


def corpus_folder(name: str) -> Path:
    """``../shared/corpus/<name>``, or skip the test with a reason when it is not there."""
    folder = CORPUS / name
    if not (folder / "EXPECTED.json").exists():
        pytest.skip(f"corpus folder {folder} not found (set VMSUBMIT_CORPUS)")
    return folder


def expected(name: str) -> dict:
    """The corpus folder's EXPECTED.json without its ``_oracle`` entry."""
    data = json.loads((corpus_folder(name) / "EXPECTED.json").read_text())
    data.pop("_oracle", None)
    return data
