"""Launch optuna-dashboard on a studyhall storage, with the storage tuned as workers use it.

The dashboard gets the storage object from ``studyhall.storage.open_storage`` (SQLite in WAL
mode with a busy timeout), so it reads while workers write. It binds to loopback unless told
otherwise: the dashboard has no authentication and can delete studies.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable

from studyhall.errors import StudyhallError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DashboardError", "dashboard_url", "serve_dashboard"]

_logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class DashboardError(StudyhallError, OSError):
    """The dashboard cannot listen where asked (port in use, unknown host, no permission)."""


def dashboard_url(host: str, port: int) -> str:
    """The address a browser should open (``[::1]`` style for IPv6 hosts)."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/dashboard/"


def _bind_error(host: str, port: int, exc: OSError) -> DashboardError:
    if exc.errno == errno.EADDRINUSE:
        return DashboardError(f"port {port} on {host} is already in use; pick another with --port.")
    if exc.errno == errno.EACCES:
        return DashboardError(f"no permission to listen on port {port}; use a port above 1023.")
    return DashboardError(f"cannot listen on {host}:{port}: {exc.strerror or exc}.")


def check_port(host: str, port: int) -> None:
    """Fail now, with one line, if ``host:port`` cannot be bound (the server would fail later).

    Uses SO_REUSEADDR like the dashboard's own server, so a port in TIME_WAIT counts as free.
    """
    if not 0 < port < 65536:
        raise DashboardError(f"port must be in 1..65535; got {port}.")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise DashboardError(f"cannot resolve host {host!r}: {exc.strerror}.") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise _bind_error(host, port, exc) from None


def _artifact_store(url: object, configured: str | None) -> object | None:
    """The store the workers saved models to, if its directory exists (else the tab stays off)."""
    from optuna.artifacts import FileSystemArtifactStore

    from studyhall.objectives._artifacts import artifact_dir

    directory = artifact_dir(url, configured)
    if directory is None or not directory.is_dir():
        return None
    _logger.info("dashboard artifacts from %s", directory)
    return FileSystemArtifactStore(directory)


def serve_dashboard(
    storage: str | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    on_ready: Callable[[str], None] | None = None,
    artifact_dir: str | None = None,
) -> None:
    """Serve optuna-dashboard for ``storage`` until interrupted (Ctrl-C returns normally).

    Args:
        storage: storage URL (default ``sqlite:///studyhall.db``).
        host, port: where to listen; loopback by default.
        on_ready: called with the dashboard's URL once storage and port are checked, just
            before serving (the CLI prints it).
        artifact_dir: the trials' saved models (default: where workers save them for this
            storage, e.g. ``runs.db.artifacts/``); the dashboard lists them on each trial's
            page when the directory exists.

    Raises:
        StorageError: the storage cannot be opened.
        DashboardError: the port is in use or the host cannot be bound.

    Example:
        >>> serve_dashboard("sqlite:///studyhall.db", port=8081)  # doctest: +SKIP
    """
    import optuna_dashboard

    from studyhall.storage import open_storage, parse_url

    url = parse_url(storage)
    backend = open_storage(url)
    check_port(host, port)
    address = dashboard_url(host, port)
    _logger.info("serving optuna-dashboard for %s at %s", url.masked, address)
    if on_ready is not None:
        on_ready(address)
    store = _artifact_store(url, artifact_dir)
    try:
        optuna_dashboard.run_server(backend, host=host, port=port, artifact_store=store)
    except OSError as exc:  # lost the port to another process since check_port
        raise _bind_error(host, port, exc) from None
