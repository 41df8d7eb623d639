"""The ``postgres`` driver's options, header column and SQL without a server."""

from __future__ import annotations

import pytest

from rrjobs.core.errors import ConfigError
from rrjobs.core.headers import BadHeadersError
from rrjobs.core.message import Message
from rrjobs.core.options import validate
from rrjobs.drivers.postgres.config import PostgresOptions, PostgresSection
from rrjobs.drivers.postgres.driver import decode_headers, encode_headers, insert_statement
from rrjobs.drivers.postgres.queries import queries

PASSWORD = "PgSecret-7f3a91c2"


def test_the_section_masks_the_dsn_password_and_checks_the_scheme() -> None:
    section = validate(PostgresSection, {"dsn": f"postgresql://app:{PASSWORD}@db:5432/app"},
                       "postgres")
    assert section.dsn.get_secret_value().endswith("@db:5432/app")
    assert PASSWORD not in repr(section) and PASSWORD not in str(section.dsn)
    with pytest.raises(ConfigError) as err:
        validate(PostgresSection, {"dsn": f"mysql://app:{PASSWORD}@db/app"}, "postgres")
    assert "postgres.dsn" in str(err.value) and PASSWORD not in str(err.value)
    assert validate(PostgresSection, {"dsn": ""}, "postgres").pool_size == 4


def test_pipeline_options_have_defaults_and_key_paths() -> None:
    options = validate(PostgresOptions, {}, "jobs.pipelines.p.config")
    assert (options.table, options.priority, options.prefetch, options.visibility_timeout,
            options.poll_interval, options.dead_letter) == ("rrjobs_jobs", 10, 100, 30.0, 1.0,
                                                            False)
    declared = validate(PostgresOptions, {"prefetch": "7", "poll_interval": "250ms",
                                          "table": ""}, "declare.p")
    assert (declared.prefetch, declared.poll_interval, declared.table) == (7, 0.25,
                                                                          "rrjobs_jobs")
    for key, value in (("table", 'jobs"; DROP TABLE x'), ("table", "A" * 60),
                       ("visibility_timeout", "500ms"), ("prefetch", 0)):
        with pytest.raises(ConfigError) as err:
            validate(PostgresOptions, {key: value}, "jobs.pipelines.p.config")
        assert f"jobs.pipelines.p.config.{key}" in str(err.value)


def test_the_headers_column_round_trips_and_refuses_what_no_job_carries() -> None:
    headers = {"a": ["1", "2"], "ü": [""]}
    assert decode_headers(encode_headers(headers)) == headers
    assert encode_headers({}) == "{}" and decode_headers("{}") == {}
    assert decode_headers('{"k": "v", "n": 1}') == {"k": ["v"], "n": ["1"]}
    with pytest.raises(ValueError, match="not a JSON object"):
        decode_headers("[1, 2]")
    with pytest.raises(BadHeadersError):
        decode_headers('{"k": "' + "x" * 70_000 + '"}')


def test_every_statement_names_its_own_table_only() -> None:
    sql = queries("orders_jobs")
    statements = [getattr(sql, name) for name in ("insert", "insert_uniform", "reserve", "ack",
                                                  "requeue", "release", "dead_letter", "counts")]
    assert all('"orders_jobs' in s and "rrjobs_jobs" not in s for s in statements)
    assert "FOR UPDATE SKIP LOCKED" in sql.reserve and "ORDER BY priority, seq" in sql.reserve


def test_jobs_alike_go_in_one_insert_that_sends_what_they_share_once() -> None:
    sql = queries("orders_jobs")
    alike = [Message("Send", f"{i}".encode(), "p", headers={"k": ["v"]}, delay=1.5)
             for i in range(3)]
    statement, args = insert_statement(sql, "p", alike, "orders_jobs", 7)
    assert statement == sql.insert_uniform and '"orders_jobs"' in statement
    assert args == ("p", [m.id for m in alike], [b"0", b"1", b"2"], "Send", '{"k":["v"]}',
                    7, False, 1500, "orders_jobs")
    # one job unlike the others: every column per job; priority 0 is the pipeline's
    mixed = [*alike, Message("Other", bytearray(b"x"), "p", priority=2, auto_ack=True)]
    statement, args = insert_statement(sql, "p", mixed, "orders_jobs", 7)
    assert statement == sql.insert
    assert args[2:8] == (["Send", "Send", "Send", "Other"], [b"0", b"1", b"2", b"x"],
                         ['{"k":["v"]}'] * 3 + ["{}"], [7, 7, 7, 2],
                         [False, False, False, True], [1500, 1500, 1500, 0])
    assert type(args[3][3]) is bytes
    # without a default, priority 0 is left to the table (the pipeline it records)
    assert insert_statement(sql, "p", alike[:1], "c")[1][5] is None
