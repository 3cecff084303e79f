"""HTTP client of the registry API, used by the CLI and the deployer."""

from __future__ import annotations

from typing import Any

import httpx

from core.errors import (
    AuthenticationError,
    ConcurrencyConflictError,
    FeaturePlatformError,
    InfrastructureError,
    InvalidDefinitionError,
    NotFoundError,
    Problem,
)


class RegistryClient:
    def __init__(self, base_url: str, token: str | None = None, actor: str | None = None,
                 timeout: float = 30.0) -> None:
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if actor:
            headers["X-FP-Actor"] = actor
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def apply(self, definitions: list[dict[str, Any]], dry_run: bool = False,
              message: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"definitions": definitions, "dry_run": dry_run}
        if message:
            body["message"] = message
        return self._request("POST", "/v1/apply", json=body)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self._request("GET", path, params=params or None)

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise InfrastructureError(
                f"registry not reachable at {self.base_url} ({error}); is `fp registry serve` "
                "running and FP_REGISTRY_URL right?") from error
        if response.is_success:
            body: dict[str, Any] = response.json()
            return body
        raise _error_from(response)


def _error_from(response: httpx.Response) -> FeaturePlatformError:
    try:
        body = response.json()
        detail = str(body.get("detail", response.text))
    except ValueError:
        body, detail = {}, response.text
    status = response.status_code
    if status == 422 and body.get("errors"):
        return InvalidDefinitionError([
            Problem(e.get("path") or "$", e.get("message") or "", e.get("definition"))
            for e in body["errors"]])
    if status == 409:
        return ConcurrencyConflictError(detail)
    if status == 401:
        return AuthenticationError(f"{detail} (set FP_API_TOKEN to one of the registry's tokens)")
    if status == 404:
        return NotFoundError(detail)
    return InfrastructureError(f"registry answered {status}: {detail}")
