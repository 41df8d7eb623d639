"""rrjobs' RPC: RoadRunner's ``jobs`` methods over local HTTP/JSON (and
rrjobs' own dead-letter calls).

:class:`RPCServer` serves a running :class:`~rrjobs.runtime.jobs.Jobs`;
:class:`RPCClient` calls it. The wire form is described in :mod:`.codec`, the
routes and statuses in :mod:`.server`.
"""

from typing import TYPE_CHECKING

from rrjobs.core.lazy import lazy_exports

if TYPE_CHECKING:
    from rrjobs.rpc.address import DEFAULT_LISTEN, Address
    from rrjobs.rpc.client import RPCClient
    from rrjobs.rpc.errors import BadRequestError, RPCConnectionError, RPCError, UnknownMethodError
    from rrjobs.rpc.server import METHODS, RR_METHODS, RPCServer

__getattr__, __dir__ = lazy_exports(__name__, {
    "rrjobs.rpc.address": ["DEFAULT_LISTEN", "Address"],
    "rrjobs.rpc.client": ["RPCClient"],
    "rrjobs.rpc.errors": [
        "BadRequestError", "RPCConnectionError", "RPCError", "UnknownMethodError",
    ],
    "rrjobs.rpc.server": ["METHODS", "RR_METHODS", "RPCServer"],
})

__all__ = [
    "DEFAULT_LISTEN", "METHODS", "RR_METHODS", "Address", "BadRequestError", "RPCClient",
    "RPCConnectionError", "RPCError", "RPCServer", "UnknownMethodError",
]
