"""PostgreSQL: a cluster made with Debian's ``initdb`` and run by its ``postgres`` server
as a local process (the official image with testcontainers otherwise).

The cluster listens on 127.0.0.1 and a free port, its unix socket in the data dir, with
``fsync`` on (a SIGKILL of the server must lose nothing committed) and scram-sha-256
authentication for the user ``rrjobs`` (password made fresh per start). PostgreSQL refuses
to run as root: as root, ``initdb`` and the server run as the ``postgres`` user
(``setpriv``), the data dir chowned to it.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from . import versions
from .base import (
    LOOPBACK,
    BrokerHandle,
    BrokerSpec,
    LocalPlan,
    free_ports,
    port_open,
    run_async,
    split_host_port,
)
from .containers import ContainerPlan, start_container

USER = "rrjobs"
DATABASE = "postgres"
#: the system user the server runs as when the harness runs as root
SYSTEM_USER = "postgres"


def _bindir() -> str | None:
    """Where ``initdb`` and ``postgres`` are: PATH's ``initdb`` resolved, else the newest
    ``/usr/lib/postgresql/<version>/bin``."""
    initdb = shutil.which("initdb")
    if initdb:
        real = os.path.realpath(initdb)
        if os.path.exists(os.path.join(os.path.dirname(real), "postgres")):
            return os.path.dirname(real)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return os.path.dirname(found[-1]) if found else None


def _as_server_user() -> list[str]:
    """The argv prefix that runs a command as :data:`SYSTEM_USER` when we are root."""
    if os.geteuid() != 0:
        return []
    return [
        "setpriv",
        f"--reuid={SYSTEM_USER}",
        f"--regid={SYSTEM_USER}",
        "--init-groups",
        "--reset-env",
    ]


def _version(bindir: str) -> str | None:
    try:
        out = subprocess.run(
            [os.path.join(bindir, "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    parts = out.stdout.split()  # postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)
    return parts[2] if len(parts) > 2 else None


def dsn(host: str, port: int, password: str) -> str:
    return f"postgresql://{USER}:{password}@{host}:{port}/{DATABASE}"


class PostgresSpec(BrokerSpec):
    name = "postgres"
    marker = "postgres"
    env_var = "RRJOBS_POSTGRES_DSN"
    title = "PostgreSQL"

    def probe(self, endpoint: str, timeout: float = 5.0) -> None:
        """Connect with asyncpg and run ``SELECT 1``."""
        host, port = split_host_port(endpoint, 5432)
        if not port_open(host, port, timeout=1.0):
            raise ConnectionError(f"nothing listens on {host}:{port}")
        import asyncpg

        async def check() -> None:
            conn = await asyncpg.connect(endpoint, timeout=timeout)
            try:
                await conn.fetchval("SELECT 1")
            finally:
                await conn.close()

        run_async(check, timeout)

    def local_unavailable(self) -> str | None:
        if _bindir() is None:
            return "no PostgreSQL server (apt-get install postgresql)"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                return f"running as root and there is no {SYSTEM_USER!r} user to run the server"
            if shutil.which("setpriv") is None:
                return "running as root and no `setpriv` to run the server as postgres"
        return None

    def plan_local(self, data_dir: Path) -> LocalPlan:
        bindir = _bindir()
        assert bindir is not None
        (port,) = free_ports(1)
        password = secrets.token_urlsafe(18)
        cluster = data_dir / "cluster"
        prefix = _as_server_user()

        def prepare(log_path: Path) -> None:
            if prefix:  # the server user must own what it writes
                entry = pwd.getpwnam(SYSTEM_USER)
                os.chown(data_dir, entry.pw_uid, entry.pw_gid)
            pwfile = data_dir / "pwfile"
            pwfile.write_text(password + "\n")
            if prefix:
                os.chown(pwfile, pwd.getpwnam(SYSTEM_USER).pw_uid, -1)
            pwfile.chmod(0o600)
            try:
                with open(log_path, "ab") as log:
                    subprocess.run(
                        [
                            *prefix,
                            os.path.join(bindir, "initdb"),
                            "-D",
                            str(cluster),
                            "-U",
                            USER,
                            f"--pwfile={pwfile}",
                            "--auth=scram-sha-256",
                            "--encoding=UTF8",
                            "--locale=C",
                            "--no-instructions",
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        check=True,
                        timeout=120,
                    )
            finally:
                pwfile.unlink(missing_ok=True)

        return LocalPlan(
            argv=[
                *prefix,
                os.path.join(bindir, "postgres"),
                "-D",
                str(cluster),
                "-c",
                f"listen_addresses={LOOPBACK}",
                "-p",
                str(port),
                "-c",
                f"unix_socket_directories={data_dir}",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=64MB",
                "-c",
                "logging_collector=off",
            ],
            endpoint=dsn(LOOPBACK, port, password),
            prepare=prepare,
            version=_version(bindir),
        )

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        password = secrets.token_urlsafe(18)

        def endpoint(host: str, ports: Mapping[int, int]) -> str:
            return dsn(host, ports[5432], password)

        plan = ContainerPlan(
            image=versions.POSTGRES_IMAGE,
            ports=[5432],
            env={
                "POSTGRES_USER": USER,
                "POSTGRES_PASSWORD": password,
                "POSTGRES_DB": DATABASE,
                "POSTGRES_HOST_AUTH_METHOD": "scram-sha-256",
                "POSTGRES_INITDB_ARGS": "--auth=scram-sha-256",
            },
            endpoint=endpoint,
        )
        return start_container(
            self.name, self.title, plan, self.probe, self.env_for, detached=detached
        )
