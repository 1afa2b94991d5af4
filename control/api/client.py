"""A small client of the running API, for the command line (``gridflex control clear-fault``).

Standard library only (``urllib``): the CLI reads ``[api] listen``, ``token`` and
``tls_cert`` from the site file and calls the API of the ``gridflex control`` that runs
against that file. Over TLS the site's ``tls_cert`` is the trusted certificate (a
self-signed one is its own authority), so the host in ``listen`` must be one the
certificate names. A listen address of ``0.0.0.0`` / ``::`` is called on the loopback.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from control.api.app import PREFIX
from gridflex.config import ApiConfig

__all__ = ["ApiClientError", "api_base_url", "call_api", "clear_fault"]

#: How long one call waits for the API, s.
TIMEOUT_S = 10.0

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


class ApiClientError(RuntimeError):
    """The API could not be reached or refused the call; the message says which and why."""


def api_base_url(api: ApiConfig) -> str:
    """``http(s)://host:port`` to reach the API that ``api`` describes."""
    host = _WILDCARDS.get(api.host, api.host)
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if api.tls else 'http'}://{host}:{api.port}"


def call_api(
    api: ApiConfig, token: str, method: str, path: str, body: Any = None
) -> dict[str, Any]:
    """Call ``method PREFIX+path`` with the bearer token; the JSON answer (raises)."""
    url = api_base_url(api) + PREFIX + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    context = None
    if api.tls and api.tls_cert is not None:
        context = ssl.create_default_context(cafile=str(api.tls_cert))
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as response:
            answer: Any = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise ApiClientError(f"{method} {url}: HTTP {exc.code}: {_detail(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiClientError(
            f"cannot reach the API at {url}: {reason} (is `gridflex control` running with "
            "this site file and its [api] table?)"
        ) from None
    except ValueError as exc:
        raise ApiClientError(f"{method} {url}: the answer is not JSON ({exc})") from None
    if not isinstance(answer, dict):
        raise ApiClientError(f"{method} {url}: expected a JSON object, got {answer!r}")
    return answer


def clear_fault(api: ApiConfig, token: str, asset_id: str) -> list[str]:
    """Clear ``asset_id``'s latched faults through the API; the faults cleared."""
    answer = call_api(api, token, "POST", f"/assets/{asset_id}/clear-fault")
    cleared = answer.get("cleared")
    if not isinstance(cleared, list):
        raise ApiClientError(f"unexpected answer from the API: {answer!r}")
    return [str(item) for item in cleared]


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    return str(detail) if detail else str(exc.reason)
