"""The inbound Trio shell: listeners, HTTP/1.1 (h11) and HTTP/2 (h2) drivers."""

from ccag.server.listener import open_listeners, serve
from ccag.server.types import Handler, Headers, Request, Responder

__all__ = ["Handler", "Headers", "Request", "Responder", "open_listeners", "serve"]
