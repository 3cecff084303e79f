"""The jars a PyFlink job needs beyond PyFlink's own lib folder, found or fetched into a cache."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from core.errors import InfrastructureError

# Apache's own Kafka connector jars, which PyPI carries only inside this repackaged distribution.
CONNECTOR_WHEEL = "shigawire-apache-flink-libraries==2.0.0.post1"
KAFKA_JARS = ("flink-connector-kafka", "kafka-clients", "lz4-java", "snappy-java", "zstd-jni")
_KAFKA_JAR_MEMBER = re.compile(rf"pyflink/lib/({'|'.join(KAFKA_JARS)})(-[^/]*)?\.jar")
DEFAULT_CACHE = Path.home() / ".cache" / "fp" / "flink-jars"


def pyflink_home() -> Path:
    """The Flink distribution inside the installed PyFlink package (found without importing
    it: importing PyFlink starts nothing but costs seconds)."""
    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        raise InfrastructureError("Flink runs from PyFlink: `pip install apache-flink==2.0.2`")
    return Path(next(iter(spec.submodule_search_locations)))


def ensure_kafka_connector_jars(cache_dir: Path = DEFAULT_CACHE) -> list[Path]:
    """The Kafka connector and its dependencies, downloaded into ``cache_dir`` on first use."""
    jar_dir = cache_dir / "kafka"
    if jar_dir.is_dir():
        return sorted(jar_dir.glob("*.jar"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        download = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--quiet",
                f"--dest={scratch}",
                CONNECTOR_WHEEL,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if download.returncode != 0:
            raise InfrastructureError(
                f"cannot download {CONNECTOR_WHEEL} for the Flink Kafka connector:\n"
                f"{download.stderr.strip()}"
            )
        # Never pip-install that wheel: it would overwrite PyFlink's own lib folder.
        (wheel,) = Path(scratch).glob("*.whl")
        staged = Path(scratch) / "kafka"
        staged.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            for member in filter(_KAFKA_JAR_MEMBER.fullmatch, archive.namelist()):
                (staged / Path(member).name).write_bytes(archive.read(member))
        found = sorted(staged.glob("*.jar"))
        if len(found) != len(KAFKA_JARS):
            raise InfrastructureError(f"{CONNECTOR_WHEEL} lacks some Kafka jars; it holds {found}")
        # A rename publishes all jars at once, so a concurrent caller never sees half of them.
        with contextlib.suppress(OSError):
            staged.rename(jar_dir)
    return sorted(jar_dir.glob("*.jar"))


def flink_python_jar() -> Path:
    """The jar a cluster needs to run Python operators (not in PyFlink's lib folder)."""
    jars = sorted((pyflink_home() / "opt").glob("flink-python-*.jar"))
    if not jars:
        raise InfrastructureError(f"no flink-python jar in {pyflink_home() / 'opt'}")
    return jars[-1]
