"""Test databases: one per backend per test run, migrated once, emptied between tests.

PostgreSQL is found in this order: a testcontainers container when a Docker engine
answers, `TEST_DATABASE_URL`, then the server at 127.0.0.1:5432. Only when none is
reachable are PostgreSQL tests skipped, with the reason printed.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from models.db import make_engine
from models.migrate import upgrade

LOCAL_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _reachable(url: str) -> bool:
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@contextmanager
def postgres_server() -> Iterator[tuple[str | None, str]]:
    """Yield (admin URL, how it was found) or (None, why not)."""
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as pg:
            yield pg.get_connection_url(), "testcontainers"
            return
    env_url = os.environ.get("TEST_DATABASE_URL")
    if env_url:
        if _reachable(env_url):
            yield env_url, "TEST_DATABASE_URL"
        else:
            yield None, f"TEST_DATABASE_URL={make_url(env_url).render_as_string()} is unreachable"
        return
    if _reachable(LOCAL_PG):
        yield LOCAL_PG, "local server at 127.0.0.1:5432"
        return
    yield None, "no Docker engine, no TEST_DATABASE_URL, nothing on 127.0.0.1:5432"


def create_pg_database(admin_url: str) -> str:
    """A fresh, migrated database on the server; its URL."""
    name = f"igny8_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def drop_pg_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn, suppress(Exception):
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def create_sqlite_database(directory: Path) -> str:
    url = f"sqlite:///{directory / f'igny8_test_{uuid.uuid4().hex[:8]}.db'}"
    upgrade(url)
    return url


def truncate_all(engine: sa.Engine) -> None:
    """Empty every app table (not alembic_version), resetting ids."""
    inspector = sa.inspect(engine)
    tables = [t for t in inspector.get_table_names() if t.startswith("igny8_")]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            joined = ", ".join(f'"{t}"' for t in tables)
            conn.execute(sa.text(f"TRUNCATE {joined} RESTART IDENTITY CASCADE"))
        else:
            conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
            for table in tables:
                conn.exec_driver_sql(f'DELETE FROM "{table}"')
            with suppress(Exception):
                conn.exec_driver_sql("DELETE FROM sqlite_sequence")


def engine_for(url: str, pool_size: int = 20) -> sa.Engine:
    return make_engine(url, pool_size=pool_size)
