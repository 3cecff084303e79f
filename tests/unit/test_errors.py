"""The error table: every platform error is answered with its own status and code, and a
client rebuilds the class the server raised from the problem body."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import TestClient

from core import errors
from core.errors import (
    FeaturePlatformError,
    InvalidDefinitionError,
    InvalidFeatureRequestError,
    NotFoundError,
    Problem,
    error_class,
)
from core.problems import EXCEPTION_HANDLERS
from offline.training_sets import resolve
from registry.client import RegistryClient
from registry.store.base import DefinitionRecord, VersionRecord

ERROR_CLASSES = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
                 if issubclass(cls, FeaturePlatformError) and cls.__module__ == errors.__name__
                 and not cls.__name__.startswith("_")]


def sample(cls: type[FeaturePlatformError]) -> FeaturePlatformError:
    if issubclass(cls, InvalidDefinitionError):
        return cls([Problem("$.features[0].window", "must be a duration", "feature_view:v")])
    if issubclass(cls, InvalidFeatureRequestError):
        return cls([Problem("entities[0]", "missing key columns user_id")])
    return cls(f"a {cls.__name__} happened")


def test_every_error_class_has_its_own_code_and_a_status() -> None:
    assert len(ERROR_CLASSES) >= 12
    codes = [cls.__dict__.get("code") for cls in ERROR_CLASSES]
    assert None not in codes and len(set(codes)) == len(codes), codes
    for cls in ERROR_CLASSES:
        assert 400 <= cls.status < 600 and cls.title, cls
        assert error_class(cls.code) is cls


def test_the_status_of_each_kind_of_error() -> None:
    assert (errors.NotFoundError.status, errors.AuthenticationError.status,
            errors.ConcurrencyConflictError.status, errors.InfrastructureError.status,
            errors.InvalidDefinitionError.status, errors.InvalidFeatureRequestError.status,
            errors.MalformedBodyError.status) == (404, 401, 409, 503, 422, 422, 400)


def test_a_subclass_without_a_code_of_its_own_is_answered_as_its_parent() -> None:
    class RegionOutage(errors.InfrastructureError):
        pass

    assert (RegionOutage.status, RegionOutage.code) == (503, "dependency_unavailable")
    assert error_class("dependency_unavailable") is errors.InfrastructureError
    assert error_class("no_such_code") is None and error_class(None) is None


@pytest.fixture(scope="module")
def raising_app() -> Iterator[TestClient[Any]]:
    by_name = {cls.__name__: cls for cls in ERROR_CLASSES}

    @get("/raise/{name:str}")
    async def raise_error(name: FromPath[str]) -> None:
        raise sample(by_name[name])

    with TestClient(Litestar([raise_error], exception_handlers=EXCEPTION_HANDLERS)) as client:
        yield client


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_a_client_rebuilds_the_class_the_server_raised(
        raising_app: TestClient[Any], cls: type[FeaturePlatformError]) -> None:
    raised = sample(cls)
    response = raising_app.get(f"/raise/{cls.__name__}")
    assert response.status_code == cls.status
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert (body["status"], body["code"], body["title"]) == (cls.status, cls.code, cls.title)

    client = RegistryClient(str(raising_app.base_url))
    client._http = raising_app  # the client's own request path, against the app in memory
    with pytest.raises(FeaturePlatformError) as caught:
        client.get(f"/raise/{cls.__name__}")
    assert type(caught.value) is cls
    assert str(raised) in str(caught.value)
    if isinstance(raised, InvalidDefinitionError | InvalidFeatureRequestError):
        assert isinstance(caught.value, InvalidDefinitionError | InvalidFeatureRequestError)
        assert caught.value.problems == raised.problems
        assert body["errors"][0]["path"] == raised.problems[0].path


def test_a_401_asks_for_a_bearer_token(raising_app: TestClient[Any]) -> None:
    response = raising_app.get("/raise/AuthenticationError")
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthorized"


def test_litestar_http_errors_carry_their_status_phrase_as_code(
        raising_app: TestClient[Any]) -> None:
    response = raising_app.get("/no/such/route")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


class _EmptyRegistry:
    """A registry holding one on-demand view, ``ratios``, and nothing else."""

    def definition(self, kind: str, name: str) -> DefinitionRecord | None:
        if kind == "on_demand_feature_view" and name == "ratios":
            return DefinitionRecord(kind, name, 1, 1, {}, "hash", datetime.now(UTC))
        return None

    def version(self, kind: str, name: str, version: int) -> VersionRecord | None:
        return None

    def versions(self, kind: str, name: str) -> list[VersionRecord]:
        return []


def test_an_unregistered_view_in_a_training_set_is_not_found() -> None:
    with pytest.raises(NotFoundError) as caught:
        resolve(["ghost:amount", "ratios:r"], _EmptyRegistry())
    assert caught.value.status == 404
    assert "feature view 'ghost' is not registered" in str(caught.value)
    assert "'ratios' is an on-demand feature view" in str(caught.value)  # every problem named
    with pytest.raises(InvalidFeatureRequestError) as invalid:
        resolve(["ratios:r"], _EmptyRegistry())
    assert invalid.value.status == 422
