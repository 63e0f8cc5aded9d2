"""A real PostgreSQL server for tests: Debian's binaries, a temporary data directory, a free port.

Started once per session as a non-root user (PostgreSQL refuses to run as root): the
``postgres`` system user when the tests run as root, the current user otherwise. Each
test gets its own database (:meth:`PostgresServer.new_database`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ingest.broker import free_port

BINDIR = Path(os.environ.get("SMOKE_TEST_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
START_TIMEOUT_S = 60.0


def binaries_missing() -> str | None:
    """Why PostgreSQL cannot be started here, or None."""
    for name in ("initdb", "postgres"):
        if not (BINDIR / name).is_file():
            return f"PostgreSQL binaries not found in {BINDIR} (install Debian's postgresql package)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


@dataclass
class PostgresServer:
    port: int
    root: Path
    process: subprocess.Popen

    @property
    def admin_dsn(self) -> str:
        return f"postgresql+psycopg://smoke@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """A fresh, empty database; returns its DSN."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=smoke dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://smoke@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="smoke-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    subprocess.run([*prefix, str(BINDIR / "initdb"), "-D", str(data), "-U", "smoke", "--auth=trust", "-E", "UTF8",
                    "--no-sync", "--no-instructions"], check=True, capture_output=True)
    port = free_port()
    log = open(root / "postgres.log", "ab")  # noqa: SIM115 - the server writes to it until stop()
    process = subprocess.Popen(
        [*prefix, str(BINDIR / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
         "-c", "max_connections=100"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            psycopg.connect(f"host=127.0.0.1 port={port} user=smoke dbname=postgres", connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                text = (root / "postgres.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL did not start on port {port}: {text}") from None
            time.sleep(0.2)
    return PostgresServer(port, root, process)
