"""The constructor the ``rrjobs.drivers`` entry point names; the kit's ``DriverConstructor``
validates the global section and each pipeline's options, then opens the driver."""

from my_awesome_driver.driver import Driver, Options, Settings
from rrjobs.core.constructor import DriverConstructor


class Plugin(DriverConstructor):
    name = "my_awesome_driver"
    driver_class = Driver
    options_model = Options
    section_key = "my_awesome_driver"
    section_model = Settings
