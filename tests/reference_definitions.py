"""The reference definitions: one entity, source, feature view and on-demand view, as
docs/reference.md shows them.  Many suites register them; each call gives a fresh copy that
a test may change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_FILE = Path(__file__).resolve().parent / "fixtures" / "contract_definitions.json"


def reference_definitions() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(_FILE.read_text())
    return loaded
