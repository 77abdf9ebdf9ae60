"""Session-wide infrastructure: databases on both backends; Temporal in temporal_fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests import dbs

pytest_plugins = ["tests.temporal_fixtures", "tests.s3_fixture", "tests.wordpress_fixture"]


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str | None]:
    with dbs.postgres_server() as (url, how):
        print(f"\n[igny8 tests] PostgreSQL: {how}")
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return dbs.create_sqlite_database(Path(tmp_path_factory.mktemp("db")))


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str | None) -> Iterator[str | None]:
    if pg_admin_url is None:
        yield None
        return
    url = dbs.create_pg_database(pg_admin_url)
    yield url
    dbs.drop_pg_database(pg_admin_url, url)


_ENGINES: dict[str, sa.Engine] = {}


def _engine(url: str) -> sa.Engine:
    if url not in _ENGINES:
        _ENGINES[url] = dbs.engine_for(url, pool_size=30)
    return _ENGINES[url]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty, migrated database; every test using it runs on both backends."""
    if request.param == "sqlite":
        url = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("pg_url")
        if url is None:
            pytest.skip("PostgreSQL unreachable: " + "see the [igny8 tests] line above")
    dbs.truncate_all(_engine(url))
    return url


@pytest.fixture
def engine(db_url: str) -> sa.Engine:
    return _engine(db_url)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for engine in _ENGINES.values():
        engine.dispose()
