"""The REST API of ``gridflex control``: protocol, application, server, client.

- :class:`ControlApi` (:mod:`control.api.protocol`): what the API needs from the service;
- :func:`create_app` (:mod:`control.api.app`): the FastAPI application and its routes;
- :class:`StreamHub` (:mod:`control.api.stream`): fan-out of live messages to WebSockets;
- :func:`serve_api` (:mod:`control.api.server`): uvicorn on the caller's event loop;
- :func:`clear_fault` (:mod:`control.api.client`): the CLI's call to a running API.

See ``docs/api.md`` for the routes, the token and TLS.
"""

from control.api.app import PREFIX, ManualDispatch, create_app
from control.api.client import ApiClientError, api_base_url, clear_fault
from control.api.protocol import ControlApi
from control.api.server import ApiServer, serve_api
from control.api.stream import StreamHub, Subscription

__all__ = [
    "PREFIX",
    "ApiClientError",
    "ApiServer",
    "ControlApi",
    "ManualDispatch",
    "StreamHub",
    "Subscription",
    "api_base_url",
    "clear_fault",
    "create_app",
    "serve_api",
]
