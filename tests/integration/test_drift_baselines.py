"""Drift baselines through the real registry: `fp drift baseline` from a training set file,
the registry's refusals, `GET /v1/feature-views/{name}/drift` and `fp drift status`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from offline.training_sets import METADATA_KEY
from tests.conftest import RunningRegistry
from tests.integration.test_cli import fp


def training_set(path: Path, rows: int = 5_000) -> None:
    """A file shaped as `fp dataset` writes one: label columns, one column per reference,
    and the references' versions in its metadata."""
    rng = np.random.default_rng(1)
    table = pa.table({
        "user_id": [f"u{n % 50}" for n in range(rows)],
        "user_transactions:amount_1m": pa.array(rng.lognormal(3, 1, rows)),
        "user_transactions:txn_count_1m": pa.array(rng.integers(0, 9, rows)),
        "user_transactions:last_channel": pa.array(
            [None if n % 10 == 0 else ["web", "app", "pos"][n % 3] for n in range(rows)]),
    })
    features = {f"user_transactions:{name}": {"view": "user_transactions", "version": 1,
                                              "feature": name}
                for name in ("amount_1m", "txn_count_1m", "last_channel")}
    metadata = {"features": features, "created_at": "2026-12-01T00:00:00+00:00",
                "snapshots": {"raw.transactions": 42}}
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata)}),
                   str(path))


def test_a_training_set_becomes_the_baseline_of_its_view_version(
        registry_server: RunningRegistry, examples_path: Path, tmp_path: Path) -> None:
    repo = tmp_path / "features"
    shutil.copytree(examples_path, repo)
    assert fp(registry_server, "apply", str(repo)).returncode == 0
    dataset = tmp_path / "train.parquet"
    training_set(dataset)

    registered = fp(registry_server, "drift", "baseline", "user_transactions@1",
                    "--dataset", str(dataset))
    assert registered.returncode == 0, registered.stderr
    assert "amount_1m, last_channel, txn_count_1m from train.parquet (5,000 rows)" \
        in registered.stdout

    status = httpx.get(f"{registry_server.url}/v1/feature-views/user_transactions/drift"
                       ).json()
    [baseline] = status["baselines"]
    assert (baseline["version"], baseline["origin"]["snapshots"]) == (
        1, {"raw.transactions": 42})
    channel = baseline["features"]["last_channel"]
    assert (channel["count"], channel["null_rate"], channel["other"]) == (4_500, 0.1, 0)
    amount = baseline["features"]["amount_1m"]
    assert sum(b["count"] for b in amount["bins"]) == 5_000
    assert amount["bins"][-1]["upper"] is None and amount["mean"] > 0
    assert status["readings"] == [] and status["open_alerts"] == []

    listed = fp(registry_server, "drift", "status")
    assert "no baseline (`fp drift baseline VIEW@N`): merchant_transactions" in listed.stdout


def test_the_registry_refuses_a_baseline_that_does_not_fit_the_version(
        registry_server: RunningRegistry, examples_path: Path, tmp_path: Path) -> None:
    assert fp(registry_server, "apply", str(examples_path)).returncode == 0
    url = f"{registry_server.url}/v1/feature-views/user_transactions/baselines"
    numbers = {"kind": "numeric", "nulls": 0, "count": 1, "mean": 1.0,
               "squared_deviations": 0.0, "min": 1.0, "max": 1.0, "buckets": {"91": 1}}
    refused = httpx.post(url, json={"version": 1, "features": {
        "last_channel": numbers, "nope": numbers,
        "txn_count_1m": {**numbers, "buckets": {"999": 1}},
        "amount_1m": {**numbers, "count": 0, "buckets": {}, "min": None, "max": None}}})
    assert refused.status_code == 422
    problems = {p["path"]: p["message"] for p in refused.json()["errors"]}
    assert problems["features.last_channel"] == "categorical statistics are needed, not " \
        "numeric"
    assert problems["features.nope"].startswith("user_transactions@1 has no monitored "
                                                "feature 'nope'")
    assert "at least one value" in problems["features.amount_1m"]
    assert "buckets run from -281 to 281" in problems["features.txn_count_1m"]
    assert httpx.post(url, json={"version": 9, "features": {}}).status_code == 404

    missing = fp(registry_server, "drift", "baseline", "user_transactions@1", "--dataset",
                 str(tmp_path / "none.parquet"))
    assert missing.returncode == 1 and "no such file" in missing.stderr
    bad_ref = fp(registry_server, "drift", "baseline", "user_transactions", "--dataset", "x")
    assert bad_ref.returncode == 1 and "is not VIEW@N" in bad_ref.stderr
