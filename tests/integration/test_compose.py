"""docker-compose.yml and the Dockerfile stay valid and in step with the code (no engine
runs here: the file is checked against the Compose Specification's JSON schema)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from fp.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def compose() -> dict[str, dict[str, object]]:
    loaded: dict[str, dict[str, object]] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_file_follows_the_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec",
                             str(COMPOSE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_when_the_plugin_exists() -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("the docker client here has no compose plugin")
    # The file requires the registry's write tokens; any value makes it complete.
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "FP_API_TOKENS": "ci:secret"})
    assert result.returncode == 0, result.stderr


def test_every_build_target_exists_in_the_dockerfile() -> None:
    stages = set(re.findall(r"^FROM \S+ AS (\w+)$", (ROOT / "Dockerfile").read_text(), re.M))
    targets = {s["build"]["target"] for s in compose()["services"].values()
               if isinstance(s, dict) and "build" in s}
    assert targets and targets <= stages


def test_every_platform_command_is_an_fp_command() -> None:
    parser = build_parser()
    platform = [s for s in compose()["services"].values()
                if isinstance(s, dict) and s.get("image") == "feature-platform:latest"]
    assert {tuple(s["command"][:2]) for s in platform} >= {
        ("registry", "serve"), ("serving", "serve"), ("deployer", "run"), ("writer", "run"),
        ("db", "upgrade")}
    for service in platform:
        parser.parse_args([str(part) for part in service["command"]])


def test_the_image_copies_every_package_the_project_installs() -> None:
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
