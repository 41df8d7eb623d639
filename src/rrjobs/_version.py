"""The version of rrjobs (a module of its own, so that any module may read it
without importing the package and the runtime with it)."""

__version__ = "0.1.0"
