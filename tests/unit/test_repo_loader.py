"""Loading features repositories: Python, YAML and JSON files, ordering, errors, command line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from core.domain.definitions import parse_definitions
from core.domain.validation import validate_batch
from core.errors import RepositoryLoadError
from registry.repo_loader import load_repository, main

EXAMPLE_REPOSITORY = Path(__file__).resolve().parents[2] / "examples" / "features"


def write_repository(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text).lstrip())
    return root


def load_error(root: Path) -> str:
    with pytest.raises(RepositoryLoadError) as caught:
        load_repository(root)
    return str(caught.value)


def names(definitions: list[dict[str, Any]]) -> list[str]:
    return [f"{d['kind']}:{d['name']}" for d in definitions]


def test_example_repository_loads_and_validates():
    definitions = load_repository(EXAMPLE_REPOSITORY)

    assert names(definitions) == [
        "entity:user", "entity:merchant", "source:transactions",
        "feature_view:user_transactions", "feature_view:merchant_transactions",
        "on_demand_feature_view:user_ratios"]
    validate_batch({}, parse_definitions([*definitions]))


def test_loading_leaves_no_repository_module_behind():
    before = set(sys.modules)
    first = load_repository(EXAMPLE_REPOSITORY)

    assert set(sys.modules) <= before
    assert load_repository(EXAMPLE_REPOSITORY) == first


def test_python_files_import_each_other_and_shared_objects_appear_once(tmp_path):
    write_repository(tmp_path, {
        "a_views.py": """
            from registry.sdk import Feature, FeatureView
            from z_entities import user
            from sources import clicks

            user_clicks = FeatureView("user_clicks", entities=[user], source=clicks,
                                      features=[Feature("clicks_1h", "count", window="1h")])
        """,
        "sources.py": """
            from registry.sdk import Field, Source
            clicks = Source("clicks", "clicks", "ts", [Field("user_id", "string", required=True),
                                                       Field("ts", "long", required=True)])
        """,
        "z_entities.py": """
            from registry.sdk import Entity
            user = Entity("user", ["user_id"])
        """,
    })

    definitions = load_repository(tmp_path)

    assert names(definitions) == ["entity:user", "source:clicks", "feature_view:user_clicks"]
    validate_batch({}, parse_definitions([*definitions]))


def test_collects_lists_and_every_format_in_sorted_order_skipping_tooling_folders(tmp_path):
    write_repository(tmp_path, {
        "b.py": """
            from registry.sdk import Entity
            ALL = [Entity("b1", ["k"]), Entity("b2", ["k"])]
            helper = 42
        """,
        "a.json": '[{"kind": "entity", "name": "a1", "join_keys": ["k"]}]',
        "c/one.yml": """
            kind: entity
            name: c1
            join_keys: [k]
            ---
            - {kind: entity, name: c2, join_keys: [k], description: 2024-01-01}
        """,
        "c/empty.yaml": "",
        "notes.md": "not a definition",
        ".hidden/x.yaml": "{kind: entity, name: hidden, join_keys: [k]}",
        "venv/x.yaml": "{kind: entity, name: venv, join_keys: [k]}",
        "node_modules/x.json": "{}",
        "__pycache__/x.py": "raise SystemExit",
    })

    definitions = load_repository(tmp_path)

    assert names(definitions) == ["entity:a1", "entity:b1", "entity:b2", "entity:c1", "entity:c2"]
    assert definitions[-1]["description"] == "2024-01-01"  # a YAML date stays text


def test_error_in_python_names_file_and_line(tmp_path):
    write_repository(tmp_path, {"defs.py": """
        from registry.sdk import Entity

        user = Entity("user", [user_id])
    """})

    assert load_error(tmp_path) == (
        f"{tmp_path}/defs.py:3: NameError: name 'user_id' is not defined")


def test_error_in_an_imported_file_names_that_file(tmp_path):
    write_repository(tmp_path, {
        "views.py": "import z_helpers\n",
        "z_helpers.py": "x = 1\ny = 1 / 0\n",
    })

    assert load_error(tmp_path) == (f"{tmp_path}/z_helpers.py:2: ZeroDivisionError: division by "
                                    f"zero (while loading {tmp_path}/views.py)")


def test_files_are_named_as_the_caller_spelt_the_path(tmp_path, monkeypatch):
    write_repository(tmp_path, {"sub/defs.py": "import not_installed\n"})
    monkeypatch.chdir(tmp_path)

    assert load_error(Path(".")) == (
        "sub/defs.py:1: ModuleNotFoundError: No module named 'not_installed'")


def test_syntax_error_names_file_line_and_column(tmp_path):
    write_repository(tmp_path, {"defs.py": "x = 1\ny = (\n"})

    assert load_error(tmp_path).startswith(f"{tmp_path}/defs.py:2:5: SyntaxError: ")


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("views.yaml", "kind: entity\nname: [user\n", "views.yaml:3:1: invalid YAML: "),
    ("views.json", '{"kind": "entity",\n "name": }', "views.json:2:10: invalid JSON: "),
    ("views.yaml", "- {kind: entity}\n- just text\n", "views.yaml: item 1 must be a definition "
                                                       "object, got str"),
])
def test_document_errors_name_file_and_position(tmp_path, name, text, expected):
    (tmp_path / name).write_text(text)

    assert load_error(tmp_path).startswith(f"{tmp_path}/{expected}")


def test_values_json_cannot_carry_are_refused(tmp_path):
    write_repository(tmp_path, {"defs.py": """
        from decimal import Decimal
        from registry.sdk import Field, Source
        clicks = Source("clicks", "clicks", "ts", [Field("ts", "long", min=Decimal(0))])
    """})

    assert "defs.py: source 'clicks' is not valid JSON" in load_error(tmp_path)


def test_arguments_of_the_wrong_shape_are_reported_with_the_file(tmp_path):
    write_repository(tmp_path, {"defs.py": """
        from registry.sdk import Source
        clicks = Source("clicks", "clicks", "ts", schema=None)
    """})

    assert load_error(tmp_path).startswith(f"{tmp_path}/defs.py: source 'clicks': TypeError: ")


def test_missing_path_is_an_error(tmp_path):
    assert load_error(tmp_path / "nowhere") == f"{tmp_path}/nowhere: no such file or directory"


def test_command_line_prints_definitions_as_json():
    completed = subprocess.run(
        [sys.executable, "-m", "registry.repo_loader", str(EXAMPLE_REPOSITORY)],
        capture_output=True, text=True, check=True, timeout=60)

    assert len(json.loads(completed.stdout)["definitions"]) == 6


def test_command_line_keeps_stdout_for_the_answer(tmp_path, capsys):
    write_repository(tmp_path, {"defs.py": "print('hello')\nraise RuntimeError('boom')\n"})

    assert main([str(tmp_path)]) == 1
    output = capsys.readouterr()
    assert json.loads(output.out) == {"error": f"{tmp_path}/defs.py:2: RuntimeError: boom"}
    assert output.err == "hello\n"
