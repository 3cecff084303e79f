"""HTTP client of the registry API, used by the CLI and the deployer."""

from __future__ import annotations

from typing import Any

import httpx

from core.errors import (
    AuthenticationError,
    ConfigurationError,
    FeaturePlatformError,
    InfrastructureError,
    error_class,
)


def parse_token(entry: str, position: int) -> tuple[str, str]:
    """The identity and the secret of a token entry (``FP_API_TOKENS``, ``FP_READ_TOKENS``,
    ``FP_API_TOKEN``): ``name:secret``, or a bare secret, whose identity is ``token-N`` for
    the ``position``-th entry (from 1).  A secret therefore cannot contain ``:``."""
    name, separator, secret = entry.partition(":")
    if not separator:
        return f"token-{position}", entry
    if not name or not secret:
        raise ConfigurationError(f"token entry {position} is not name:secret with both parts "
                                 "set")
    return name, secret


class RegistryClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        """``token`` is a token entry (``name:secret`` or a bare secret): its secret is sent."""
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {parse_token(token, 1)[1]}"
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

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", path, json=body)

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
        raise error_from_response(response)


def error_from_response(response: httpx.Response, api: str = "registry"
                        ) -> FeaturePlatformError:
    """The error a platform API (the registry, the ingest API) answered, rebuilt from the
    problem body's ``code``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    detail = str(body.get("detail", response.text))
    error_type = error_class(body.get("code"))
    if error_type is AuthenticationError:
        return AuthenticationError(f"{detail} (set FP_API_TOKEN to one of the registry's tokens)")
    if error_type is None:  # not an answer of the platform's: a proxy's, say
        return InfrastructureError(f"{api} answered {response.status_code}: {detail}")
    return error_type.from_problem(detail, body)
