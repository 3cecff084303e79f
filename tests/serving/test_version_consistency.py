"""While another process flips a view's version map in a loop, no response mixes versions."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from core.domain.layout import namespace_of
from tests.serving.conftest import OnlineStore, apply, wait_for
from tests.serving.definitions import ENTITY, SOURCE, feature_view, now_millis

REPO = Path(__file__).resolve().parents[2]
ENTITIES = 50
FLIP_SECONDS = 4.0


def test_responses_never_mix_versions_while_the_version_map_flips(
        registry: httpx.Client, serving: httpx.Client, online_store: OnlineStore,
        redis_url: str, unique: Callable[[str], str]) -> None:
    view, scaled = unique("flipping"), unique("flipping_scaled")
    version_1 = feature_view(view, ttl=None)
    version_2 = {**version_1, "description": "same features, another namespace"}
    on_demand = {"kind": "on_demand_feature_view", "name": scaled, "inputs": [view],
                 "features": [{"name": "clicks_x10", "type": "long",
                               "expression": "clicks_1h * 10"}]}
    apply(registry, [ENTITY, SOURCE, version_1, on_demand])
    apply(registry, [version_2])
    # Every value in namespace vN is N, so a response's values tell which version served them.
    now = now_millis()
    for version in (1, 2):
        for index in range(ENTITIES):
            online_store.write(view, namespace_of(version), f"u{index}",
                               {"clicks_1h": str(version), "amount_1h": f"{version}.0",
                                "quantity_1h": str(version)}, now)
    online_store.switch(view, 1, {1: namespace_of(1), 2: namespace_of(2)})
    wait_for(lambda: serving.get(f"/v1/features/{view}/u0").status_code == 200, "the view")

    features = [f"{view}:clicks_1h", f"{view}:amount_1h", f"{view}:quantity_1h",
                f"{scaled}:clicks_x10"]
    body = {"entities": [{"user_id": f"u{i}"} for i in range(ENTITIES)], "features": features}
    flipper = subprocess.Popen(
        [sys.executable, "-m", "tests.serving.version_flipper", redis_url, view,
         str(FLIP_SECONDS)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    served: Counter[int] = Counter()
    mixed: list[object] = []
    deadline = time.monotonic() + FLIP_SECONDS + 30
    try:
        while flipper.poll() is None and time.monotonic() < deadline:
            response = serving.post("/v1/features/batch", json=body).json()
            version = response["versions"][view]
            expected = {version, float(version), version * 10}
            values = {value for row in response["results"] for key, value in row.items()
                      if key != "user_id"}
            if not values <= expected or response["versions"][scaled] != 1:
                mixed.append(response)
            served[version] += 1
            single = serving.get(f"/v1/features/{view}/u1").json()
            if set(single["features"].values()) - {None} != {single["version"],
                                                             float(single["version"])}:
                mixed.append(single)
            served[single["version"]] += 1
    finally:
        flips = int(flipper.communicate(timeout=60)[0])
    assert mixed == []
    assert served[1] > 20 and served[2] > 20, (served, flips)  # both versions were served
    assert flips > 100
