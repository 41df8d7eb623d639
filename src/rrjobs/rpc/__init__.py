"""rrjobs' RPC: RoadRunner's ``jobs`` methods over local HTTP/JSON.

:class:`RPCServer` serves a running :class:`~rrjobs.runtime.jobs.Jobs`;
:class:`RPCClient` calls it. The wire form is described in :mod:`.codec`, the
routes and statuses in :mod:`.server`.
"""

from rrjobs.rpc.address import DEFAULT_LISTEN, Address
from rrjobs.rpc.client import RPCClient
from rrjobs.rpc.errors import BadRequestError, RPCConnectionError, RPCError, UnknownMethodError
from rrjobs.rpc.server import METHODS, RPCServer

__all__ = [
    "DEFAULT_LISTEN",
    "METHODS",
    "Address",
    "BadRequestError",
    "RPCClient",
    "RPCConnectionError",
    "RPCError",
    "RPCServer",
    "UnknownMethodError",
]
