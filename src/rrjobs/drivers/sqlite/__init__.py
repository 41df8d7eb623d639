"""The ``sqlite`` driver (alias ``boltdb``): see :mod:`rrjobs.drivers.sqlite.driver`."""

from rrjobs.drivers.sqlite.config import SQLiteOptions
from rrjobs.drivers.sqlite.driver import (
    CAPABILITIES,
    BoltDBConstructor,
    BoltDBDriver,
    SQLiteConstructor,
    SQLiteDriver,
    SQLiteJob,
)

__all__ = ["CAPABILITIES", "BoltDBConstructor", "BoltDBDriver", "SQLiteConstructor",
           "SQLiteDriver", "SQLiteJob", "SQLiteOptions"]
