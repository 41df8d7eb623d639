"""Options of the ``postgres`` driver.

RoadRunner has no PostgreSQL jobs driver: the keys follow its other drivers' names
(``dsn`` as in its SQL plugins, ``priority``, ``prefetch``, ``visibility_timeout``,
``poll_interval``). The global ``postgres:`` section holds the connection; each
pipeline names its table (pipelines may share one) and its queue settings.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from rrjobs.core.options import DeclaredOptions, Duration, StrictModel, or_default
from rrjobs.core.secret_types import SecretURL, URLSecret, url_scheme

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_TABLE = "rrjobs_jobs"

#: A table name: an unquoted identifier, short enough for the names derived from it
#: (``<table>_dead``, ``<table>_pipelines``, ``<table>_ready``...) to stay under
#: PostgreSQL's 63 bytes.
TABLE_PATTERN = r"^[a-z_][a-z0-9_]{0,47}$"


def _postgres_url(value: URLSecret) -> URLSecret:
    url_scheme(value.get_secret_value(), ("postgres", "postgresql"),
               "a postgresql:// URI")
    return value


class PostgresSection(StrictModel):
    """The global ``postgres:`` section: ``dsn``, a ``postgresql://`` URI (libpq's
    query options such as ``sslmode`` pass through to asyncpg; shown with its password
    masked), and ``pool_size``, the connections each pipeline may open for pushes and
    settlements (its consumer listens on one more)."""

    dsn: Annotated[SecretURL, or_default(DEFAULT_DSN), AfterValidator(_postgres_url)] = (
        URLSecret(DEFAULT_DSN))
    pool_size: int = Field(default=4, ge=1, le=100)


class PostgresOptions(DeclaredOptions):
    """``jobs.pipelines.<name>.config`` for ``driver: postgres``; each key is described
    in ``docs/drivers/postgres.md``."""

    table: str = Field(default=DEFAULT_TABLE, pattern=TABLE_PATTERN)
    priority: int = 10
    prefetch: int = Field(default=100, ge=1, le=10_000)
    visibility_timeout: Annotated[Duration, Field(ge=1.0)] = 30.0
    poll_interval: Annotated[Duration, Field(gt=0)] = 1.0
    dead_letter: bool = False
