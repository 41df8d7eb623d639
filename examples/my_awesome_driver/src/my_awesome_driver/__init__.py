"""``my_awesome_driver``: the driver of rrjobs' "Writing a driver" tutorial.

A small, real, durable driver: each pipeline is a spool directory on the
local disk (see :mod:`my_awesome_driver.spool`). Installed, it registers
itself through the ``rrjobs.drivers`` entry point, so a pipeline selects it
with ``driver: my_awesome_driver``.

Modules, as in RoadRunner's tutorial: :mod:`~my_awesome_driver.plugin` (the
constructor), :mod:`~my_awesome_driver.driver`, :mod:`~my_awesome_driver.job`
and :mod:`~my_awesome_driver.config`; plus the "broker client",
:mod:`~my_awesome_driver.spool`.
"""

from my_awesome_driver.config import Options, Settings
from my_awesome_driver.driver import CAPABILITIES, Driver
from my_awesome_driver.job import Item
from my_awesome_driver.plugin import Plugin
from my_awesome_driver.spool import Spool

__all__ = ["CAPABILITIES", "Driver", "Item", "Options", "Plugin", "Settings", "Spool"]
