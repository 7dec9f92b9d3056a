"""Optuna's gRPC storage proxy: many workers, one database connection pool.

``studyhall proxy --storage URL --port P`` serves a SQL storage; workers then use
``grpc://host:P``. The proxy keeps one cached storage for all of them, so hundreds of workers do
not each hold database connections. Optuna's proxy does not serve journal storages (optuna
issue 6084), so only SQL URLs are accepted behind it.

Optuna's client (``GrpcStorageProxy``) has no heartbeat; studyhall's workers add the same
system-attribute heartbeat as for journal storages, so a dead worker's trial is still retried.
The proxy's protocol offers no lock, so the admission of a study's last trials is not
serialised: with W workers a study may end with up to W-1 trials more than its budget.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from typing import Any

from studyhall.errors import StorageError
from studyhall.storage.heartbeat import Heartbeat
from studyhall.storage.urls import StorageURL

__all__ = ["open_grpc_storage", "serve_proxy"]

_logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10


def _split(url: StorageURL) -> tuple[str, int]:
    host, _, port = url.url.removeprefix("grpc://").rpartition(":")
    return host, int(port)


@functools.cache
def _client_class() -> type:
    from optuna.storages import GrpcStorageProxy

    from studyhall.storage._journal import attr_heartbeat_mixin

    class HeartbeatGrpcProxy(attr_heartbeat_mixin(), GrpcStorageProxy):  # type: ignore[misc]
        """Optuna's gRPC client with heartbeats kept as trial system attributes."""

        def __init__(self, host: str, port: int, heartbeat: Heartbeat | None) -> None:
            GrpcStorageProxy.__init__(self, host=host, port=port)
            self._setup_heartbeat(heartbeat)

    return HeartbeatGrpcProxy


def _import_grpc() -> None:
    try:
        import google.protobuf  # noqa: F401
        import grpc  # noqa: F401
    except ImportError as exc:
        raise StorageError(
            "the gRPC storage proxy needs grpcio and protobuf; pip install 'studyhall[grpc]'."
        ) from exc


def open_grpc_storage(url: StorageURL, heartbeat: Heartbeat | None = None) -> Any:
    """Connect to a ``studyhall proxy``; ``StorageError`` if none answers in 10 s."""
    import socket

    _import_grpc()
    host, port = _split(url)
    try:  # a closed port fails at once instead of after the gRPC channel's timeout
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise StorageError(
            f"cannot use storage {url.masked}: no storage proxy answered "
            f"({exc.strerror or type(exc).__name__}; is `studyhall proxy` running there?)"
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" since Optuna 4.2
        storage = _client_class()(host, port, heartbeat)
    try:
        storage.wait_server_ready(timeout=CONNECT_TIMEOUT_S)
    except ConnectionError as exc:
        storage.close()
        raise StorageError(
            f"cannot use storage {url.masked}: no storage proxy answered in {CONNECT_TIMEOUT_S} s "
            "(is `studyhall proxy` running there?)"
        ) from exc
    return storage


def _make_server(backend: Any, host: str, port: int) -> Any:
    # Optuna's make_server, without SO_REUSEPORT: a second proxy on a taken port must fail, not
    # silently share the port with the first.
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from optuna.storages import get_storage
    from optuna.storages._grpc import servicer
    from optuna.storages._grpc.auto_generated import api_pb2_grpc

    server = grpc.server(ThreadPoolExecutor(max_workers=10), options=[("grpc.so_reuseport", 0)])
    api_pb2_grpc.add_StorageServiceServicer_to_server(
        servicer.OptunaStorageProxyService(get_storage(backend)), server
    )
    try:
        server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # grpc: "Failed to bind to address"
        raise StorageError(
            f"cannot listen on {host}:{port}: the port is taken or not allowed."
        ) from exc
    return server


def serve_proxy(
    backend: Any,
    url: StorageURL,
    *,
    host: str = "127.0.0.1",
    port: int = 13000,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``backend`` (an opened SQL storage) over gRPC until interrupted.

    Raises:
        StorageError: ``url`` is not a SQL storage, or the port cannot be bound.
    """
    _import_grpc()
    if not url.is_rdb:
        raise StorageError(
            f"the gRPC proxy serves SQL storages only (Optuna's proxy cannot serve a journal); "
            f"got {url.masked}."
        )
    server = _make_server(backend, host, port)
    server.start()
    address = f"grpc://{host}:{port}"
    _logger.info("storage proxy for %s at %s", url.masked, address)
    if on_ready is not None:
        on_ready(address)
    try:
        server.wait_for_termination()
    finally:
        server.stop(grace=2).wait()
