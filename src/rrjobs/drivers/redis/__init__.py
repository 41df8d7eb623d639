"""The ``redis`` driver (Redis Streams, on redis-py's asyncio client): see
:mod:`rrjobs.drivers.redis.driver`.

Importing this package imports redis-py; ``import rrjobs`` does not (the driver loads
through its ``rrjobs.drivers`` entry point when a pipeline uses it).
"""

from rrjobs.drivers.redis.config import RedisOptions, RedisSection
from rrjobs.drivers.redis.driver import RedisConstructor, RedisDriver, RedisError

__all__ = ["RedisConstructor", "RedisDriver", "RedisError", "RedisOptions", "RedisSection"]
