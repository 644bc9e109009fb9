"""The single-node filetracker server and its reusable Tornado pieces.

- :func:`make_app` / :class:`ServerConfig` / :func:`make_server`: the server;
- :func:`public_routes` + :class:`FilesContext`: the public protocol handlers
  over any :class:`~filetracker.storage.ObjectStore` (cluster nodes mount them);
- :class:`BaseHandler`, :class:`HTTPFail`, :func:`name_from_path`,
  :func:`folder_from_path`, :func:`request_version`, :func:`status_for`:
  error answers and request parsing for any handler (e.g. the gateway).
"""

from filetracker.server.app import ServerConfig, make_app, make_server
from filetracker.server.base import (
    BaseHandler,
    HTTPFail,
    NotFoundHandler,
    folder_from_path,
    name_from_path,
    one_line,
    request_version,
    status_for,
)
from filetracker.server.handlers import (
    ContextHandler,
    FileHandler,
    FilesContext,
    ListHandler,
    VersionHandler,
    public_routes,
)
from filetracker.server.streaming import GzipDecoder, ReadPlan, open_for_read, select_range, send_file

__all__ = [
    "BaseHandler", "ContextHandler", "FileHandler", "FilesContext", "GzipDecoder", "HTTPFail",
    "ListHandler", "NotFoundHandler", "ServerConfig", "VersionHandler", "folder_from_path",
    "make_app", "make_server", "name_from_path", "one_line", "public_routes", "request_version",
    "select_range", "send_file", "status_for", "ReadPlan", "open_for_read",
]
