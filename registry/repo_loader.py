"""Loading the definitions of a features repository: a folder of ``*.py``, ``*.yaml``/``*.yml``
and ``*.json`` files.

A YAML or JSON file holds one definition object or a list of them (YAML may also hold several
``---`` documents).  A Python file is executed as a module and every module-level SDK object
(:mod:`registry.sdk`), or list/tuple of them, is collected.  Nothing is validated here: the
result is the definitions' JSON, exactly what ``POST /v1/apply`` takes and
:func:`core.domain.definitions.parse_definitions` checks.

Running a repository's Python executes its code, and loading changes ``sys.path`` and
``sys.modules`` for the duration; the platform therefore loads pushed repositories with
``python -m registry.repo_loader PATH`` in a sandboxed subprocess, which prints
``{"definitions": [...]}`` (exit 0) or ``{"error": "..."}`` (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import sys
import traceback
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Self

import yaml

from core.errors import RepositoryLoadError
from registry import sdk

_SUFFIXES = {".py", ".yaml", ".yml", ".json"}
_SKIPPED_DIRECTORIES = {"__pycache__", ".venv", "venv", "node_modules"}


def load_repository(path: Path) -> list[dict[str, Any]]:
    """The definitions' JSON of every file under ``path`` (or of the one file ``path``).

    Files are read in sorted path order and each file's definitions in the order written, so
    the result is stable; an SDK object imported into several modules appears once.
    """
    if not path.exists():
        raise RepositoryLoadError(f"{path}: no such file or directory")
    if path.is_file() and path.suffix not in _SUFFIXES:
        raise RepositoryLoadError(f"{path}: not a definition file ({', '.join(sorted(_SUFFIXES))})")
    folder = path if path.is_dir() else path.parent
    repository = _Repository(root=folder.resolve(), shown_as=folder)
    files = definition_files(repository.root) if path.is_dir() else [path.resolve()]
    definitions: list[dict[str, Any]] = []
    seen: set[int] = set()
    with _RepositoryImporter(repository.root) as importer:
        for file in files:
            shown = repository.show(file)
            if file.suffix != ".py":
                definitions.extend(_as_json(item, shown) for item in _read_definitions(file, shown))
                continue
            try:
                module = importer.load(file)
            except (Exception, SystemExit) as error:
                raise RepositoryLoadError(_describe_failure(error, file, repository)) from error
            for definition in _sdk_definitions(module):
                if id(definition) not in seen:
                    seen.add(id(definition))
                    definitions.append(_as_json(_sdk_json(definition, shown), shown))
    return definitions


@dataclass(frozen=True)
class _Repository:
    root: Path
    """The folder, resolved: what files and tracebacks are matched against."""
    shown_as: Path
    """The folder as the caller spelt it, so messages name files the way the user knows them
    (``features/views.yaml`` rather than a temporary checkout's absolute path)."""

    def contains(self, file: str | Path) -> bool:
        # Pseudo-files such as "<frozen importlib._bootstrap>" are relative: never the user's.
        return Path(file).is_absolute() and Path(file).resolve().is_relative_to(self.root)

    def show(self, file: str | Path) -> str:
        return str(self.shown_as / Path(file).resolve().relative_to(self.root))


def definition_files(root: Path) -> list[Path]:
    """The files under ``root`` that :func:`load_repository` reads, sorted."""
    found: list[Path] = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [name for name in subdirectories
                             if not name.startswith(".") and name not in _SKIPPED_DIRECTORIES]
        found.extend(Path(directory, name) for name in files
                     if Path(name).suffix in _SUFFIXES and not name.startswith("."))
    return sorted(found)


# --------------------------------------------------------------------------- YAML and JSON

class _YamlLoader(yaml.SafeLoader):
    """Safe YAML that yields only JSON values: an unquoted date stays the text written."""

    def construct_timestamp_as_text(self, node: yaml.Node) -> str:
        return self.construct_yaml_str(node)


_YamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _YamlLoader.construct_timestamp_as_text)


def _read_definitions(file: Path, shown: str) -> list[dict[str, Any]]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RepositoryLoadError(f"{shown}: cannot be read: {error}") from error
    if file.suffix == ".json":
        try:
            documents = [json.loads(text)]
        except json.JSONDecodeError as error:
            raise RepositoryLoadError(
                f"{shown}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}") from error
    else:
        try:
            documents = list(yaml.load_all(text, Loader=_YamlLoader))
        except yaml.YAMLError as error:
            raise RepositoryLoadError(_describe_yaml_error(error, shown)) from error
    definitions: list[dict[str, Any]] = []
    for document in documents:
        if document is None:  # an empty file or an empty YAML document
            continue
        items = document if isinstance(document, list) else [document]
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                where = f"item {index}" if isinstance(document, list) else "the document"
                raise RepositoryLoadError(f"{shown}: {where} must be a definition object, "
                                          f"got {type(item).__name__}")
            definitions.append(item)
    return definitions


def _describe_yaml_error(error: yaml.YAMLError, shown: str) -> str:
    if not isinstance(error, yaml.MarkedYAMLError):
        return f"{shown}: invalid YAML: {error}"
    mark = error.problem_mark or error.context_mark
    where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark else shown
    reason = " ".join(part for part in (error.problem, error.context and f"({error.context})")
                      if part)
    return f"{where}: invalid YAML: {reason}"


def _as_json(definition: dict[str, Any], shown: str) -> dict[str, Any]:
    # A round trip through JSON turns tuples and enums into what the registry will receive and
    # rejects what JSON cannot carry (NaN, Decimal, bytes) here, naming the file.
    try:
        result: dict[str, Any] = json.loads(json.dumps(definition, allow_nan=False))
    except (TypeError, ValueError) as error:
        label = f"{definition.get('kind')} {definition.get('name')!r}"
        raise RepositoryLoadError(f"{shown}: {label} is not valid JSON: {error}") from error
    return result


# --------------------------------------------------------------------------- Python

class _RepositoryImporter:
    """Executes a repository's Python files as modules that can import each other.

    While active the repository folder is on ``sys.path``, and each file executed is also
    registered under its natural module name (``entities`` for ``entities.py``), so that
    ``from entities import user`` in another file yields the very same objects — which lets
    duplicates be dropped by identity.  Each file also gets a unique name, so a repository file
    called like an installed module does not replace it.  On exit every module loaded from the
    repository is forgotten: a later load (another checkout, the next push) never sees stale ones.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = f"_features_repo_{uuid.uuid4().hex[:12]}"
        self.modules_before: set[str] = set()

    def __enter__(self) -> Self:
        self.modules_before = set(sys.modules)
        sys.path.insert(0, str(self.root))
        importlib.invalidate_caches()  # files may have changed since an earlier load
        return self

    def __exit__(self, *exc_info: object) -> None:
        sys.path.remove(str(self.root))
        for name in set(sys.modules) - self.modules_before:
            if self._from_repository(sys.modules[name]):
                del sys.modules[name]

    def load(self, file: Path) -> ModuleType:
        parts = file.relative_to(self.root).with_suffix("").parts
        natural_name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        existing = sys.modules.get(natural_name)
        if existing is not None and _file_of(existing) == file:
            return existing  # already imported by an earlier file of the repository
        spec = importlib.util.spec_from_file_location(f"{self.prefix}.{natural_name}", file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses and pickling look their module up here
        sys.modules.setdefault(natural_name, module)
        spec.loader.exec_module(module)
        return module

    def _from_repository(self, module: ModuleType) -> bool:
        # Folders imported as namespace packages have no file, only a search path.
        locations = [_file_of(module), *map(Path, getattr(module, "__path__", []))]
        return any(location is not None and location.is_relative_to(self.root)
                   for location in locations)


def _file_of(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def _sdk_definitions(module: ModuleType) -> Iterator[sdk.Definition]:
    for value in vars(module).values():
        for candidate in value if isinstance(value, list | tuple) else (value,):
            if isinstance(candidate, sdk.Definition):
                yield candidate


def _sdk_json(definition: sdk.Definition, shown: str) -> dict[str, Any]:
    try:
        return definition.to_json()
    except Exception as error:  # an argument of the wrong shape, e.g. ``features=None``
        raise RepositoryLoadError(f"{shown}: {definition.KIND} {definition.name!r}: "
                                  f"{type(error).__name__}: {error}") from error


def _describe_failure(error: BaseException, file: Path, repository: _Repository) -> str:
    """``file:line: Type: message`` at the last line of the repository's code that failed."""
    if isinstance(error, SyntaxError) and error.filename and repository.contains(error.filename):
        # Compiling fails inside importlib, so the traceback has no frame in the user's file.
        column = f":{error.offset}" if error.offset else ""
        where = f"{repository.show(error.filename)}:{error.lineno}{column}"
        reason = error.msg
    else:
        frames = [frame for frame in traceback.extract_tb(error.__traceback__)
                  if repository.contains(frame.filename)]
        where = (f"{repository.show(frames[-1].filename)}:{frames[-1].lineno}" if frames
                 else repository.show(file))
        reason = str(error)
    loading = repository.show(file)
    context = "" if where.startswith(f"{loading}:") else f" (while loading {loading})"
    return f"{where}: {type(error).__name__}: {reason}{context}"


# --------------------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m registry.repo_loader",
        description="Print the definitions of a features repository as JSON.")
    parser.add_argument("path", type=Path, help="the repository folder (or one file)")
    args = parser.parse_args(argv)
    try:
        # The repository's code may print; stdout must carry nothing but the answer.
        with contextlib.redirect_stdout(sys.stderr):
            definitions = load_repository(args.path)
    except RepositoryLoadError as error:
        print(json.dumps({"error": str(error)}))
        return 1
    print(json.dumps({"definitions": definitions}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
