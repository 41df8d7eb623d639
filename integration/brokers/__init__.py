"""Real brokers on demand for the integration tests.

Provider order for each broker: the endpoint in its ``RRJOBS_*`` variable, else a local
process (installed by ``integration/install.sh``), else a container from a pinned official
image via testcontainers when a Docker engine answers.

>>> from integration.brokers import acquire
>>> handle = acquire("kafka")          # doctest: +SKIP
>>> handle.broker.endpoint             # doctest: +SKIP
'127.0.0.1:40113'
>>> handle.stop()                      # doctest: +SKIP
"""

from .base import Broker, BrokerHandle, BrokerStartError, BrokerUnavailable, TLSAccess
from .provider import (
    SPECS,
    TLS_SPECS,
    acquire,
    acquire_own,
    acquire_tls,
    expand_names,
    require_brokers,
    spec,
)

__all__ = [
    "SPECS",
    "TLS_SPECS",
    "Broker",
    "BrokerHandle",
    "BrokerStartError",
    "BrokerUnavailable",
    "TLSAccess",
    "acquire",
    "acquire_own",
    "acquire_tls",
    "expand_names",
    "require_brokers",
    "spec",
]
