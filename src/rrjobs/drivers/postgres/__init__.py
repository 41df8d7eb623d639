"""The ``postgres`` driver: see :mod:`rrjobs.drivers.postgres.driver`; pushing inside
the application's transaction: :func:`push_in`."""

from rrjobs.drivers.postgres.config import PostgresOptions, PostgresSection
from rrjobs.drivers.postgres.driver import CAPABILITIES, PostgresConstructor, PostgresDriver
from rrjobs.drivers.postgres.push import create_table, push_in

__all__ = ["CAPABILITIES", "PostgresConstructor", "PostgresDriver", "PostgresOptions",
           "PostgresSection", "create_table", "push_in"]
