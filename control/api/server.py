"""Serve the API with uvicorn on the caller's event loop, beside the control service.

:func:`serve_api` binds the listening socket itself (so a port in use is an ``OSError``
for the caller, not uvicorn's ``sys.exit``), then runs :class:`ApiServer` as a task of the
running loop: one process, one loop, the API calls the service directly. The server leaves
SIGINT/SIGTERM to the command (``gridflex control`` stops it with :meth:`ApiServer.stop`).
HTTPS when ``[api] tls_cert`` and ``tls_key`` are set (a key that group or others may
read is refused); ``[api] allow_from`` turns away other addresses with 403 before the
token is looked at (:class:`control.api.allow.AllowFrom`).

uvicorn's own loggers (``uvicorn.error``, ``uvicorn.access``) go through gridflex's logging
setup (``log_config=None``) with a filter that blanks any ``token=`` in a logged URL and
any bearer credential in a logged header: a WebSocket client may pass the token in the query
string, and the token is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from control.api.allow import AllowFrom
from control.api.limits import BodyLimit
from gridflex.access import PrivateFileError, check_private_file
from gridflex.config import ApiConfig, ConfigError, split_listen

__all__ = ["ApiServer", "RedactToken", "serve_api"]

log = logging.getLogger(__name__)

#: How long a stop waits for open requests and WebSockets before it cancels them, s.
GRACEFUL_STOP_S = 3

_SECRET = re.compile(r"(token=|bearer\s+)[^&\s\"']+", re.IGNORECASE)


class RedactToken(logging.Filter):
    """Replace any ``token=VALUE`` or ``Bearer VALUE`` in a log record's message by ``***``.

    uvicorn logs the request line (with the query string) and, at DEBUG, the handshake
    headers (with ``Authorization``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; always keep it."""
        message = record.getMessage()
        redacted = _SECRET.sub(r"\1***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _install_redaction() -> None:
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactToken) for f in logger.filters):
            logger.addFilter(RedactToken())


class ApiServer(uvicorn.Server):
    """A uvicorn server run as a task of the caller's loop (see :func:`serve_api`)."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, *, tls: bool) -> None:
        super().__init__(config)
        self.sock = sock
        self.tls = tls
        self.task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Leave the signals to the command that runs the server."""
        yield

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self.sock.getsockname()[0])

    @property
    def port(self) -> int:
        """The TCP port the server listens on (the real one when 0 was asked)."""
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        """``http(s)://host:port`` of the server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def wait_started(self, timeout_s: float = 10.0) -> bool:
        """Wait until the server accepts connections; False when it ended or timed out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.started:
            if (self.task is not None and self.task.done()) or loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def stop(self) -> None:
        """Stop accepting, close open connections (graceful for a few s), end the task."""
        self.should_exit = True
        if self.task is not None:
            try:
                await self.task
            finally:
                self.task = None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so; without
    # it a keep-alive client waited ~40 ms per request (Nagle and delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def serve_api(app: FastAPI, config: ApiConfig, *, listen: str | None = None) -> ApiServer:
    """Start serving ``app`` on the running loop; returns the server (its ``task`` runs it).

    ``listen`` (``HOST:PORT``, port 0 for any) overrides ``config.listen``. Raises
    ``OSError`` when the address cannot be bound and ``ssl.SSLError``/``OSError`` when the
    TLS files cannot be loaded, both before anything runs; ``ConfigError`` for a private
    key that group or others may read. Await ``wait_started`` to know
    it accepts connections and ``stop`` to end it.
    """
    if listen is None:
        host, port = config.host, config.port
    else:
        host, port = _split_any_port(listen)
    tls = config.tls
    if config.tls_key is not None and config.tls_key.exists():  # missing: OSError below
        try:
            check_private_file(config.tls_key, "TLS private key")
        except PrivateFileError as exc:
            raise ConfigError(f"config error: api.tls_key: {exc}") from None
    bounded = BodyLimit(app)
    uv_config = uvicorn.Config(
        AllowFrom(bounded, config.allow_from) if config.allow_from else bounded,
        host=host,
        port=port,
        ssl_certfile=str(config.tls_cert) if config.tls_cert is not None else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key is not None else None,
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_STOP_S,
        server_header=False,
    )
    uv_config.load()  # reads the TLS files now: an error is the caller's, at start-up
    _install_redaction()
    sock = _bind(host, port)
    server = ApiServer(uv_config, sock, tls=tls)
    server.task = asyncio.get_running_loop().create_task(
        server.serve(sockets=[sock]), name="gridflex-api"
    )
    log.info("API on %s%s", server.url, " (TLS)" if tls else "")
    return server


def _split_any_port(listen: str) -> tuple[str, int]:
    """Like ``split_listen`` but also accepts port 0 (any free port)."""
    head, sep, tail = listen.rpartition(":")
    if sep and tail == "0":
        host, _ = split_listen(f"{head}:1")
        return host, 0
    return split_listen(listen)
