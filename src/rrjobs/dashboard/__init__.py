"""rrjobs' web dashboard, served by ``rrjobs serve`` with ``dashboard.enabled``
or ``--dashboard`` (see :mod:`rrjobs.dashboard.server` and docs/operations.md)."""

from rrjobs.dashboard.server import Dashboard, DashboardServer

__all__ = ["Dashboard", "DashboardServer"]
