"""The constructor the ``rrjobs.drivers`` entry point names; the kit's ``DriverConstructor``
validates the global section and each pipeline's options, then opens the driver."""

from my_awesome_driver.driver import Driver, Options, Settings
from rrjobs.core.constructor import DriverConstructor


class Plugin(DriverConstructor):
    driver_class = Driver  # its name, "my_awesome_driver", is the constructor's
    options_model = Options
    section_model = Settings  # the global section, under the driver's name
