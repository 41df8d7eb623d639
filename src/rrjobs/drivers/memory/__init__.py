"""The ``memory`` driver: see :mod:`rrjobs.drivers.memory.driver`."""

from rrjobs.drivers.memory.config import MemoryOptions
from rrjobs.drivers.memory.driver import CAPABILITIES, MemoryConstructor, MemoryDriver

__all__ = ["CAPABILITIES", "MemoryConstructor", "MemoryDriver", "MemoryOptions"]
