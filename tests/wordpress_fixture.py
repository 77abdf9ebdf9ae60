"""A real WordPress for the session (Debian's, on PHP's built-in server and local MariaDB).

One instance per test session, on a free port with a database of its own (dropped at the
end), so parallel sessions on one machine do not meet. Where it cannot run (no PHP, no
WordPress tree, no MariaDB: see deploy/wordpress/setup.sh) the tests that need it skip,
with the reason printed. The fake WordPress for fault injection is per test.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from cli.wordpress import (
    WordPressInstance,
    WordPressStartError,
    start_wordpress,
    wordpress_available,
)
from tests.fake_wordpress import FakeWordPress
from tests.procs import free_ports


@pytest.fixture(scope="session")
def wordpress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WordPressInstance]:
    """The session's WordPress: `base_url`, `username`, `app_password`."""
    reason = wordpress_available()
    if reason is None:
        data_dir = tmp_path_factory.mktemp("wordpress")
        port = free_ports(("wordpress",))["wordpress"]
        db_name = f"igny8_test_wp_{uuid.uuid4().hex[:10]}"
        try:
            instance = start_wordpress(data_dir, port, db_name)
        except WordPressStartError as exc:
            reason = f"could not start: {exc}"
    if reason is not None:
        print(f"\n[igny8 tests] WordPress: skipped ({reason})")
        pytest.skip(f"WordPress unavailable: {reason}")
    print(f"\n[igny8 tests] WordPress: {instance.base_url} ready in {instance.started_in_s:.1f} s")
    try:
        yield instance
    finally:
        instance.stop(drop_database=True)
        shutil.rmtree(instance.data_dir, ignore_errors=True)  # a 60 MB copy of WordPress


@pytest.fixture
def fake_wordpress() -> Iterator[FakeWordPress]:
    """A fresh fake WordPress for one test (fault injection; counts what was created)."""
    fake = FakeWordPress().start()
    try:
        yield fake
    finally:
        fake.stop()
