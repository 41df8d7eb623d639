"""The driver's SQL for one jobs table (see :mod:`rrjobs.drivers.postgres.schema`).

Times are the server's (``now()``): every process sharing a table agrees on when a
job is due and when a lease ends. Durations are passed in whole milliseconds. A
reservation is ``(seq, deliveries)`` held by ``reserved_by`` (a driver instance):
every settlement names all three, so a lease that expired and was taken by another
consumer (its ``deliveries`` grew) cannot be settled by the first one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

from rrjobs.drivers.postgres.schema import names

_MS = "* interval '1 millisecond'"


@dataclass(frozen=True)
class Queries:
    """The statements of one jobs table."""

    table: str

    @cached_property
    def _t(self) -> str:
        return names(self.table).jobs

    @cached_property
    def insert(self) -> str:
        """Rows of ``$1`` (pipeline) from arrays: ids, names, payloads, headers,
        priorities (``NULL``: the pipeline's), auto_ack, delays (ms); then
        ``pg_notify($9, $1)``, sent when the transaction commits."""
        return (f"WITH ins AS (INSERT INTO {self._t} (pipeline, id, name, payload, headers, "
                "priority, auto_ack, available_at) "
                f"SELECT $1, u.i, u.n, u.p, u.h, u.pr, u.a, now() + u.d {_MS} "
                "FROM unnest($2::text[], $3::text[], $4::bytea[], $5::text[], $6::bigint[], "
                "$7::boolean[], $8::bigint[]) WITH ORDINALITY AS u(i, n, p, h, pr, a, d, o) "
                "ORDER BY u.o RETURNING 1) "
                "SELECT pg_notify($9, $1)")

    @cached_property
    def insert_uniform(self) -> str:
        """:attr:`insert` of jobs alike but for their ids (``$2``) and payloads
        (``$3``): one name (``$4``), headers (``$5``), priority (``$6``), auto_ack
        (``$7``) and delay in ms (``$8``) for all; then ``pg_notify($9, $1)``."""
        return (f"WITH ins AS (INSERT INTO {self._t} (pipeline, id, name, payload, headers, "
                "priority, auto_ack, available_at) "
                f"SELECT $1, u.i, $4, u.p, $5, $6, $7, now() + $8::bigint {_MS} "
                "FROM unnest($2::text[], $3::bytea[]) WITH ORDINALITY AS u(i, p, o) "
                "ORDER BY u.o RETURNING 1) "
                "SELECT pg_notify($9, $1)")

    def _reservation(self, reap_also: str = "") -> str:
        t = self._t
        return (f"reaped AS (UPDATE {t} SET reserved_by = NULL WHERE pipeline = $1 "
                f"AND reserved_by IS NOT NULL AND available_at <= now(){reap_also}), "
                f"picked AS (SELECT seq FROM {t} WHERE pipeline = $1 AND reserved_by IS NULL "
                "AND available_at <= now() ORDER BY priority, seq LIMIT $2 "
                "FOR UPDATE SKIP LOCKED), "
                f"r AS (UPDATE {t} AS j SET reserved_by = $3, available_at = now() + $4 {_MS}, "
                "deliveries = j.deliveries + 1 FROM picked WHERE j.seq = picked.seq "
                "RETURNING j.seq, j.id, j.name, j.payload, j.headers, j.priority, j.auto_ack, "
                "j.deliveries) ")

    @cached_property
    def reserve(self) -> str:
        """Reserve up to ``$2`` ready jobs of ``$1`` for ``$3`` for ``$4`` ms, in
        priority then FIFO order (the rows returned in that order), skipping rows
        other consumers are locking; expired reservations of the pipeline are
        taken back on the way (ready for the next reservation)."""
        return f"WITH {self._reservation()}SELECT * FROM r ORDER BY priority, seq"

    @cached_property
    def reserve_acking(self) -> str:
        """:attr:`ack` of the reservations ``($5[i], $6[i])`` of ``$3``, then
        :attr:`reserve`, in one statement: the reserved rows with, in a ninth column,
        how many reservations were deleted; one row of ``NULL`` but that count when
        none was reserved. The reservations deleted are not taken back as expired in
        the same statement (a row is changed once), and are never reserved again by
        it: the statement's snapshot sees them reserved by ``$3``."""
        return (f"WITH acked AS (DELETE FROM {self._t} AS j USING unnest($5::bigint[], "
                "$6::integer[]) AS a(seq, d) WHERE j.seq = a.seq AND j.deliveries = a.d "
                "AND j.reserved_by = $3 RETURNING 1), "
                f"{self._reservation(' AND seq <> ALL($5::bigint[])')}"
                "SELECT r.*, n.acked FROM (SELECT count(*) AS acked FROM acked) AS n "
                "LEFT JOIN r ON true ORDER BY r.priority, r.seq")

    @cached_property
    def next_due(self) -> str:
        """Seconds until the next job of ``$1`` is due or a lease of it ends (``NULL``: none)."""
        return (f"SELECT extract(epoch FROM min(available_at) - now())::float8 FROM {self._t} "
                "WHERE pipeline = $1 AND available_at > now()")

    @cached_property
    def ack(self) -> str:
        """Delete the reservations ``($1[i], $2[i])`` of ``$3``; how many were."""
        return (f"WITH d AS (DELETE FROM {self._t} AS j USING unnest($1::bigint[], "
                "$2::integer[]) AS a(seq, d) WHERE j.seq = a.seq AND j.deliveries = a.d "
                "AND j.reserved_by = $3 RETURNING 1) SELECT count(*) FROM d")

    @cached_property
    def delete(self) -> str:
        return (f"DELETE FROM {self._t} WHERE seq = $1 AND deliveries = $2 "
                "AND reserved_by = $3")

    @cached_property
    def dead_letter(self) -> str:
        """Move a reservation to the dead-letter table with headers ``$4``."""
        n = names(self.table)
        return (f"WITH d AS (DELETE FROM {n.jobs} WHERE seq = $1 AND deliveries = $2 "
                "AND reserved_by = $3 RETURNING pipeline, id, name, payload, priority, "
                f"deliveries, created_at) INSERT INTO {n.dead} (pipeline, id, name, payload, "
                "headers, priority, deliveries, created_at) SELECT pipeline, id, name, payload, "
                "$4, coalesce(priority, 10), deliveries, created_at FROM d")

    @cached_property
    def requeue(self) -> str:
        """Put a reservation back at the end of its pipeline with headers ``$4``, due
        in ``$5`` ms; how many rows moved (0: the reservation was lost), and a NOTIFY."""
        n = names(self.table)
        return (f"WITH u AS (UPDATE {n.jobs} SET seq = nextval('{n.sequence}'), "
                f"reserved_by = NULL, headers = $4, available_at = now() + $5 {_MS} "
                "WHERE seq = $1 AND deliveries = $2 AND reserved_by = $3 RETURNING pipeline) "
                "SELECT count(*) FROM u, (SELECT pg_notify($6, $7)) AS n")

    @cached_property
    def extend(self) -> str:
        return (f"UPDATE {self._t} SET available_at = greatest(available_at, "
                f"now() + $4 {_MS}) WHERE seq = $1 AND deliveries = $2 AND reserved_by = $3")

    @cached_property
    def renew(self) -> str:
        """Extend the reservations ``$1`` (seqs) of ``$2`` to ``$3`` ms from now."""
        return (f"UPDATE {self._t} SET available_at = now() + $3 {_MS} "
                "WHERE seq = ANY($1::bigint[]) AND reserved_by = $2")

    @cached_property
    def release(self) -> str:
        """Give the reservations ``$1`` (seqs) of ``$2`` back, ready at once; a NOTIFY."""
        return (f"WITH u AS (UPDATE {self._t} SET reserved_by = NULL, available_at = now() "
                "WHERE seq = ANY($1::bigint[]) AND reserved_by = $2 RETURNING 1) "
                "SELECT count(*) FROM u, (SELECT pg_notify($3, $4)) AS n")

    @cached_property
    def release_all(self) -> str:
        """Give every reservation of ``$2`` in pipeline ``$1`` back; a NOTIFY."""
        return (f"WITH u AS (UPDATE {self._t} SET reserved_by = NULL, available_at = now() "
                "WHERE pipeline = $1 AND reserved_by = $2 RETURNING 1) "
                "SELECT count(*) FROM u, (SELECT pg_notify($3, $1)) AS n")

    @cached_property
    def register(self) -> str:
        return (f"INSERT INTO {names(self.table).pipelines} (name, priority) VALUES ($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET priority = EXCLUDED.priority, "
                "updated_at = now()")

    @cached_property
    def counts(self) -> str:
        """Ready, delayed and reserved jobs of ``$1``."""
        return ("SELECT count(*) FILTER (WHERE reserved_by IS NULL AND available_at <= now()), "
                "count(*) FILTER (WHERE reserved_by IS NULL AND available_at > now()), "
                f"count(*) FILTER (WHERE reserved_by IS NOT NULL) FROM {self._t} "
                "WHERE pipeline = $1")

    @cached_property
    def dead_letters(self) -> str:
        """Up to ``$3`` dead letters of ``$1`` after seq ``$2``, oldest first."""
        return ("SELECT seq, id, name, payload, headers, priority, "
                f"extract(epoch FROM failed_at)::float8 FROM {names(self.table).dead} "
                "WHERE pipeline = $1 AND seq > $2 ORDER BY seq LIMIT $3")

    @cached_property
    def last_dead(self) -> str:
        return f"SELECT max(seq) FROM {names(self.table).dead} WHERE pipeline = $1"

    @cached_property
    def delete_dead(self) -> str:
        return f"DELETE FROM {names(self.table).dead} WHERE seq = $1"

    @cached_property
    def purge_dead(self) -> str:
        return f"DELETE FROM {names(self.table).dead} WHERE pipeline = $1"


@cache
def queries(table: str) -> Queries:
    return Queries(table)
