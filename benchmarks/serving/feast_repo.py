"""The Feast side of the benchmark: a feature repo with a Redis online store holding the same
data shape, materialised with Feast's own tooling, served by ``feast serve``.

Runs Feast from its own virtualenv (Feast pins versions of libraries the platform also uses).
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.serving.shape import FEATURES_PER_VIEW, VIEWS, Shape

PROJECT = "fp_bench"

_FEATURE_STORE_YAML = """\
project: {project}
registry: data/registry.db
provider: local
online_store:
  type: redis
  connection_string: "127.0.0.1:{port},db={db}"
offline_store:
  type: file
entity_key_serialization_version: 3
"""

_DEFINITIONS = f"""\
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
for index in range({len(VIEWS)}):
    name = f"bench_view_{{index}}"
    # Module globals: Feast discovers definitions by scanning them.
    globals()[name] = FeatureView(
        name=name, entities=[user], ttl=timedelta(days=30), online=True,
        schema=[Field(name=f"f{{j}}", dtype=Float64) for j in range({FEATURES_PER_VIEW})],
        source=FileSource(path=f"data/{{name}}.parquet", timestamp_field="event_timestamp"))
"""

# Runs in Feast's virtualenv, which has pandas: one parquet file per view.
_WRITE_PARQUET = textwrap.dedent("""\
    import sys
    from datetime import datetime, timezone
    import pandas as pd
    entities, event_millis, views, per_view = (int(a) for a in sys.argv[1:5])
    stamp = datetime.fromtimestamp(event_millis / 1000, tz=timezone.utc)
    ids = [f"u{i}" for i in range(entities)]
    for view in range(views):
        columns = {"user_id": ids, "event_timestamp": [stamp] * entities}
        for j in range(per_view):
            columns[f"f{j}"] = [(i * 10 + j + view) / 7.0 for i in range(entities)]
        pd.DataFrame(columns).to_parquet(f"data/bench_view_{view}.parquet")
""")


class FeastRepo:
    def __init__(self, venv: Path, folder: Path, redis_port: int, redis_db: int) -> None:
        self.venv = venv
        self.folder = folder
        self.redis_port = redis_port
        self.redis_db = redis_db

    @property
    def feast(self) -> str:
        return str(self.venv / "bin" / "feast")

    def environment(self) -> dict[str, str]:
        # gunicorn puts a control socket under $HOME unless XDG_RUNTIME_DIR points elsewhere.
        runtime = self.folder / "runtime"
        runtime.mkdir(exist_ok=True)
        return {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "FEAST_USAGE": "False"}

    def prepare(self, shape: Shape) -> None:
        """Write the repo and its data, ``feast apply`` and ``feast materialize``; skipped
        when a previous run left the same shape materialised (``--keep-data``)."""
        marker = self.folder / f"materialized-{shape.entities}-db{self.redis_db}"
        if marker.exists():
            return
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        (self.folder / "feature_store.yaml").write_text(_FEATURE_STORE_YAML.format(
            project=PROJECT, port=self.redis_port, db=self.redis_db))
        (self.folder / "features.py").write_text(_DEFINITIONS)
        self._run([str(self.venv / "bin" / "python"), "-c", _WRITE_PARQUET,
                   str(shape.entities), str(shape.event_millis), str(len(VIEWS)),
                   str(FEATURES_PER_VIEW)])
        self._run([self.feast, "apply"])
        stamp = datetime.fromtimestamp(shape.event_millis / 1000, tz=UTC)
        self._run([self.feast, "materialize", (stamp - timedelta(days=1)).isoformat(),
                   (stamp + timedelta(minutes=1)).isoformat()])
        marker.touch()

    def forget(self) -> None:
        """The materialised data is being removed: the next run must prepare again."""
        for marker in self.folder.glob("materialized-*"):
            marker.unlink()

    def serve_command(self, port: int) -> list[str]:
        """``feast serve`` tuned for a fair comparison: no access log, no worker recycling."""
        return [self.feast, "serve", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--no-access-log", "--max-requests", "0"]

    def _run(self, command: list[str]) -> None:
        subprocess.run(command, cwd=self.folder, env=self.environment(), check=True,
                       stdout=subprocess.DEVNULL)
