"""A real S3-compatible HTTP server for the tests: moto's server mode, once per session.

It is moto's own werkzeug server in a thread of the test process, bound to a free port on
127.0.0.1, spoken to over HTTP by boto3 exactly as MinIO or AWS would be (no in-process
mocking of botocore: `mock_aws` is never started). The port comes from the OS (port 0),
so there is no window in which another process can take it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings


@dataclass(frozen=True)
class S3Server:
    """What the S3_* settings need to reach the server; the keys are moto's (any work)."""

    endpoint_url: str
    bucket: str
    access_key_id: str = "test-access-key-id"
    secret_access_key: str = "test-secret-access-key-0123456789"
    region: str = "us-east-1"

    def settings_env(self, prefix: str = "") -> dict[str, str]:
        """As environment variables, the way a deployment would set them."""
        return {
            "MEDIA_STORE": "s3",
            "S3_ENDPOINT_URL": self.endpoint_url,
            "S3_BUCKET": self.bucket,
            "S3_REGION": self.region,
            "S3_ACCESS_KEY_ID": self.access_key_id,
            "S3_SECRET_ACCESS_KEY": self.secret_access_key,
            "S3_PREFIX": prefix,
        }


def s3_settings(server: S3Server, media_dir: Path, **overrides: Any) -> Settings:
    """Settings with MEDIA_STORE=s3 pointing at `server` (no .env file is read)."""
    values: dict[str, Any] = {
        "media_store": "s3",
        "media_dir": media_dir,
        "data_dir": media_dir.parent,
        "s3_endpoint_url": server.endpoint_url,
        "s3_bucket": server.bucket,
        "s3_region": server.region,
        "s3_access_key_id": server.access_key_id,
        "s3_secret_access_key": server.secret_access_key,
    }
    return Settings(_env_file=None, **{**values, **overrides})  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The moto server's URL, for the whole session. moto is imported here, not at the
    top: importing it adds a (pass-through) handler to botocore's built-in ones, which
    sessions that never use S3 need not carry, nor pay the import for."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(s3_endpoint: str) -> S3Server:
    """A bucket name of the session's own; the store creates it on first use."""
    return S3Server(endpoint_url=s3_endpoint, bucket=f"igny8-test-{uuid.uuid4().hex[:12]}")
