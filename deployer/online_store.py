"""The deployer's view of Redis: the version map, namespace progress, namespace clean-up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import redis

from core.domain.layout import (
    ACTIVE_FIELD,
    VERSIONS_CHANNEL,
    feature_key,
    meta_key,
    versions_key,
)
from core.errors import InfrastructureError


class VersionMapStore:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def switch(self, view: str, active: int, version_map: Mapping[int, str]) -> None:
        """Replace the view's version map in one atomic step and tell every server."""
        fields = {ACTIVE_FIELD: str(active), **{str(v): ns for v, ns in version_map.items()}}
        try:
            with self.client.pipeline(transaction=True) as pipeline:
                pipeline.delete(versions_key(view))
                pipeline.hset(versions_key(view), mapping=fields)
                pipeline.publish(VERSIONS_CHANNEL, view)
                pipeline.execute()
        except redis.RedisError as error:
            raise InfrastructureError(f"switching {view} to v{active} failed: {error}") from error

    def version_map(self, view: str) -> dict[str, str]:
        return _decoded(self.client.hgetall(versions_key(view)))

    def _unmap(self, view: str, namespace: str) -> None:
        with self.client.pipeline(transaction=True) as pipeline:
            pipeline.watch(versions_key(view))  # type: ignore[no-untyped-call]
            current = _decoded(pipeline.hgetall(versions_key(view)))
            active = current.get(ACTIVE_FIELD)
            if active is not None and current.get(active) == namespace:
                raise InfrastructureError(f"namespace {namespace} of {view} is active; "
                                          "refusing to delete data that is being served")
            stale = [field for field, ns in current.items()
                     if ns == namespace and field != ACTIVE_FIELD]
            pipeline.multi()
            if stale:
                pipeline.hdel(versions_key(view), *stale)
                pipeline.publish(VERSIONS_CHANNEL, view)
            pipeline.execute()

    def watermark(self, view: str, namespace: str) -> int | None:
        """Epoch ms up to which the namespace's results are complete; None before any."""
        value = self.client.hget(meta_key(view, namespace), "watermark")
        return None if value is None else int(value)  # type: ignore[arg-type]

    def clear_namespace(self, view: str, namespace: str) -> int:
        """Take a namespace out of the version map (pinned versions on it stop being
        served) and delete its keys; the active namespace is refused."""
        self._unmap(view, namespace)
        deleted = 0
        pattern = feature_key(view, namespace, "*")
        batch: list[bytes] = []
        for key in self.client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) == 1000:
                deleted += int(self.client.unlink(*batch))  # type: ignore[arg-type]
                batch.clear()
        if batch:
            deleted += int(self.client.unlink(*batch))  # type: ignore[arg-type]
        self.client.delete(meta_key(view, namespace))
        return deleted


def _decoded(raw: Any) -> dict[str, str]:
    """A hash read with a bytes-returning client (redis-py types it loosely)."""
    return {k.decode(): v.decode() for k, v in cast(dict[bytes, bytes], raw).items()}
