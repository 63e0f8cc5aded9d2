"""The alert store's database: an engine for a DSN, and its schema brought to the newest migration.

SQLite (the embedded default) and PostgreSQL behave alike here:

- SQLite runs in WAL mode (readers never wait for the router's writes) with a
  busy timeout, and every write transaction starts with ``BEGIN IMMEDIATE``: two
  writers (the router, an operator's acknowledgement) queue for the lock instead
  of one failing when a read transaction tries to become a write.
- ``postgresql://`` means the psycopg 3 driver (the one installed).
- :func:`migrate` runs Alembic's ``upgrade head`` under a lock (a PostgreSQL
  advisory lock, a lock file beside the SQLite file), so the router and every
  Serve replica may open the store at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Any constant shared by every process that migrates this schema (pg_advisory_lock's key).
PG_MIGRATION_LOCK = 0x534D4F4B45  # "SMOKE"
WRITE = "smoke_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)


class StoreUnavailable(RuntimeError):
    """The alert store cannot be opened; the message names the DSN (without password) and the cause."""


def normalize_dsn(dsn: str) -> URL:
    """The SQLAlchemy URL of a DSN, with the installed PostgreSQL driver made explicit.

    >>> normalize_dsn("postgresql://u:p@db/alerts").drivername
    'postgresql+psycopg'
    >>> normalize_dsn("sqlite:///data/alerts.db").database
    'data/alerts.db'
    """
    try:
        url = make_url(dsn)
    except Exception as err:
        raise StoreUnavailable(f"alerting.store_dsn {dsn!r} is not a database URL: {err}") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreUnavailable(f"alerting.store_dsn: unsupported database {url.get_backend_name()!r} "
                               f"(sqlite or postgresql)")
    return url


def absolute_dsn(dsn: str, base: Path | None = None) -> str:
    """A SQLite DSN with its file made absolute (actors run in other working directories).

    >>> absolute_dsn("sqlite:///data/alerts.db", Path("/srv/smoke"))
    'sqlite:////srv/smoke/data/alerts.db'
    >>> absolute_dsn("postgresql+psycopg://u@db/alerts")
    'postgresql+psycopg://u@db/alerts'
    """
    url = make_url(dsn)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return dsn
    path = Path(url.database)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return url.set(database=str(path.resolve() if base is None else path)).render_as_string(hide_password=False)


def create_store_engine(dsn: str) -> Engine:
    url = normalize_dsn(dsn)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise StoreUnavailable("alerting.store_dsn: an in-memory SQLite store would lose every alert; "
                                   "name a file (sqlite:///data/alerts.db)")
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _sqlite_transactions(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # We issue BEGIN ourselves (below): pysqlite's own implicit BEGIN is always deferred.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL with synchronous=FULL: a committed event survives a power loss, not only a process crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get(WRITE) else "BEGIN")


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest migration (idempotent); returns the revision now in place."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with _migration_lock(engine):
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        if current == head:
            return current
        log.info("alert store: migrating %s from %s to %s", _safe(engine), current or "empty", head)
        with engine.connect().execution_options(**{WRITE: True}) as connection, connection.begin():
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    return head or ""


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_MIGRATION_LOCK})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_MIGRATION_LOCK})
                connection.commit()
        return
    lock_path = Path(f"{engine.url.database}.migrate.lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _safe(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
