"""Media stores: the local folder and S3 (against moto's S3 server over real HTTP) keep
the same promises, and two hosts with nothing on disk in common share images via S3."""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from core.settings import Settings
from providers.media_store import (
    LocalMediaStore,
    MediaNotFound,
    MediaStore,
    image_key,
    media_store_from_settings,
)
from providers.s3_media_store import S3MediaStore
from tests.s3_fixture import S3Server, s3_settings

# Every byte value, a PNG signature and a NUL-heavy tail: nothing may be re-encoded.
PAYLOAD = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64 + b"\x00" * 1000
INVALID_KEYS = ["", "/etc/passwd", "a/../b.png", "../b.png", "a//b.png", "a/./b.png", "a/"]


def _unique() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MediaStore:
    """Each store in turn; S3 tests get a prefix of their own in the session's bucket."""
    if request.param == "local":
        return LocalMediaStore(tmp_path / "media")
    server: S3Server = request.getfixturevalue("s3_server")
    settings = s3_settings(server, tmp_path / "media", s3_prefix=f"test-{_unique()}")
    return media_store_from_settings(settings)


# ---- the promises every store keeps -------------------------------------------------------
def test_round_trip_is_byte_identical(store: MediaStore) -> None:
    key = image_key(7, 42, "image/png")
    assert not store.exists(key)
    store.put(key, PAYLOAD, "image/png")
    assert store.exists(key)
    assert store.get(key) == PAYLOAD
    store.put("7/images/empty.png", b"", "image/png")
    assert store.get("7/images/empty.png") == b""


def test_exists_and_delete(store: MediaStore) -> None:
    key = image_key(1, 2, "image/jpeg")
    store.put(key, b"jpeg bytes", "image/jpeg")
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(MediaNotFound):
        store.get(key)
    store.delete(key)  # again: idempotent, no error
    store.delete("1/images/never-written.png")


def test_missing_key_raises_media_not_found(store: MediaStore) -> None:
    with pytest.raises(MediaNotFound, match=re.escape("9/images/404.png")):
        store.get("9/images/404.png")
    assert not store.exists("9/images/404.png")


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_refused(store: MediaStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid media key"):
        store.put(key, b"x", "image/png")
    for call in (store.get, store.exists, store.delete):
        with pytest.raises(ValueError, match="invalid media key"):
            call(key)


def test_put_overwrites_a_key(store: MediaStore) -> None:
    key = image_key(3, 4, "image/png")
    store.put(key, b"first version, longer than the second", "image/png")
    store.put(key, b"second", "image/webp")
    assert store.get(key) == b"second"


def test_concurrent_puts_from_20_threads(store: MediaStore) -> None:
    """Twenty threads at once, each its own key and all one shared key: every own key
    reads back its own bytes, and the shared key holds one writer's bytes whole."""
    start = threading.Barrier(20)
    payloads = [os.urandom(1024) + bytes([n]) * 4096 for n in range(20)]

    def write(n: int) -> None:
        start.wait(timeout=10)
        store.put(image_key(5, n, "image/png"), payloads[n], "image/png")
        store.put("5/images/shared.png", payloads[n], "image/png")

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(write, range(20)))
    assert [store.get(image_key(5, n, "image/png")) for n in range(20)] == payloads
    assert store.get("5/images/shared.png") in payloads


def test_stores_satisfy_the_protocol(store: MediaStore) -> None:
    assert isinstance(store, MediaStore)
    assert store.name in ("local", "s3")


# ---- S3 only ---------------------------------------------------------------------------------
def _raw_client(server: S3Server) -> Any:
    """A plain boto3 client, to look at the bucket without the store in between."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
    )


def test_s3_stores_content_type_under_the_prefix(s3_server: S3Server, tmp_path: Path) -> None:
    prefix = f"prefix-{_unique()}"
    store = S3MediaStore.from_settings(s3_settings(s3_server, tmp_path, s3_prefix=f"/{prefix}/"))
    key = image_key(8, 9, "image/webp")
    store.put(key, PAYLOAD, "image/webp")
    assert store.content_type(key) == "image/webp"
    head = _raw_client(s3_server).head_object(Bucket=s3_server.bucket, Key=f"{prefix}/{key}")
    assert head["ContentType"] == "image/webp"
    assert head["ContentLength"] == len(PAYLOAD)


def test_s3_is_a_real_http_server(s3_server: S3Server, tmp_path: Path) -> None:
    """Plain HTTP through a presigned URL sees what the store wrote; an unsigned request
    is refused (moto, like S3 and MinIO, keeps objects private)."""
    store = S3MediaStore.from_settings(s3_settings(s3_server, tmp_path))
    key = f"http/images/{_unique()}.png"
    store.put(key, PAYLOAD, "image/png")
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(f"{s3_server.endpoint_url}/{s3_server.bucket}/{key}", timeout=10)
    url = _raw_client(s3_server).generate_presigned_url(
        "get_object", Params={"Bucket": s3_server.bucket, "Key": key}, ExpiresIn=60
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "image/png"
        assert response.read() == PAYLOAD


def test_hosts_without_a_shared_disk_share_images_through_s3(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """The api and a worker on different hosts: different MEDIA_DIRs, one bucket."""
    api = media_store_from_settings(s3_settings(s3_server, tmp_path / "api-host" / "media"))
    worker = media_store_from_settings(s3_settings(s3_server, tmp_path / "worker-host" / "media"))
    key = image_key(11, int(uuid.uuid4().int % 10**9), "image/png")
    worker.put(key, PAYLOAD, "image/png")
    assert api.exists(key)
    assert api.get(key) == PAYLOAD
    api.delete(key)
    assert not worker.exists(key)
    assert not list(tmp_path.rglob("*.png")), "an S3 store wrote to a local disk"
    # What S3 fixes: two local stores on two disks do not see each other's files.
    local_worker = LocalMediaStore(tmp_path / "worker-host" / "media")
    local_worker.put(key, PAYLOAD, "image/png")
    assert not LocalMediaStore(tmp_path / "api-host" / "media").exists(key)


def test_s3_creates_a_missing_bucket_once_under_concurrency(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = f"igny8-fresh-{_unique()}"
    stores = [
        S3MediaStore.from_settings(s3_settings(s3_server, tmp_path, s3_bucket=bucket))
        for _ in range(2)
    ]
    keys = [image_key(12, n, "image/png") for n in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda n: stores[n % 2].put(keys[n], b"%d" % n, "image/png"), range(20)))
    assert [stores[0].get(key) for key in keys] == [b"%d" % n for n in range(20)]
    names = [b["Name"] for b in _raw_client(s3_server).list_buckets()["Buckets"]]
    assert names.count(bucket) == 1


def test_s3_bucket_creation_outside_us_east_1_is_idempotent(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """Other regions need a LocationConstraint, and re-creating one's own bucket there
    answers BucketAlreadyOwnedByYou (two processes racing on first use)."""
    bucket = f"igny8-eu-{_unique()}"
    settings = s3_settings(s3_server, tmp_path, s3_bucket=bucket, s3_region="eu-west-1")
    store = S3MediaStore.from_settings(settings)
    assert not store.exists("a/b.png")  # first use: creates the bucket
    store._create_bucket()  # what the losing process of a race runs: no error
    store.put("a/b.png", b"eu", "image/png")
    assert S3MediaStore.from_settings(settings).get("a/b.png") == b"eu"


# ---- choosing the store, settings and secrets -------------------------------------------------
def test_media_store_from_settings_picks_the_store(s3_server: S3Server, tmp_path: Path) -> None:
    local = media_store_from_settings(Settings(_env_file=None, data_dir=tmp_path))
    assert isinstance(local, LocalMediaStore)
    assert local.root == tmp_path / "media"
    s3 = media_store_from_settings(s3_settings(s3_server, tmp_path, s3_prefix="igny8"))
    assert isinstance(s3, S3MediaStore)
    assert (s3.bucket, s3.prefix, s3.endpoint_url) == (
        s3_server.bucket,
        "igny8",
        s3_server.endpoint_url,
    )


def test_s3_settings_come_from_the_environment(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.settings_env(prefix="/media/").items():
        monkeypatch.setenv(name, value)
    s = Settings(_env_file=None)
    assert s.media_store == "s3" and s.s3_bucket == s3_server.bucket
    assert s.s3_endpoint_url == s3_server.endpoint_url and s.s3_prefix == "media"
    assert s.s3_secret_access_key is not None
    assert s.s3_secret_access_key.get_secret_value() == s3_server.secret_access_key
    monkeypatch.setenv("S3_ENDPOINT_URL", "")
    monkeypatch.setenv("S3_ACCESS_KEY_ID", " ")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "")
    s = Settings(_env_file=None)
    assert s.s3_endpoint_url is None and s.s3_access_key_id is None  # AWS, boto3's chain


def test_s3_settings_are_validated() -> None:
    defaults = Settings(_env_file=None)
    assert (defaults.media_store, defaults.s3_bucket, defaults.s3_region) == (
        "local",
        "igny8-media",
        "us-east-1",
    )
    with pytest.raises(ValidationError, match="MEDIA_STORE=s3 needs S3_BUCKET"):
        Settings(_env_file=None, media_store="s3", s3_bucket=" ")
    Settings(_env_file=None, media_store="local", s3_bucket="")  # unused: no complaint
    with pytest.raises(ValidationError, match="both S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY"):
        Settings(_env_file=None, media_store="s3", s3_access_key_id="only-the-id")
    with pytest.raises(ValidationError, match="S3_PREFIX"):
        Settings(_env_file=None, s3_prefix="a/../b")
    with pytest.raises(ValidationError):
        Settings(_env_file=None, media_store="ftp")


def test_no_secret_in_reprs_or_logs(
    s3_server: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The secret key shows nowhere, even with every logger (botocore's too) at DEBUG. The
    access key id is an identifier, not a secret, yet it too stays out of reprs and out of
    logs at the levels a deployment runs at (INFO and up)."""
    secret, key_id = f"secret-{_unique()}", f"KEYID{_unique()}"
    server = S3Server(s3_server.endpoint_url, s3_server.bucket, key_id, secret)
    settings = s3_settings(server, tmp_path)
    store = media_store_from_settings(settings)
    for text in (repr(settings), str(settings), repr(store), settings.model_dump_json()):
        assert secret not in text and key_id not in text

    def exercise() -> None:
        key = f"log/images/{_unique()}.png"
        store.put(key, b"x", "image/png")
        store.get(key)
        store.delete(key)
        with pytest.raises(MediaNotFound):
            store.get(key)

    with caplog.at_level(logging.DEBUG):
        media_store_from_settings(s3_settings(server, tmp_path, s3_bucket=f"igny8-{_unique()}"))
        exercise()
    assert caplog.records, "nothing was logged: the check proves nothing"
    assert secret not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        fresh = media_store_from_settings(
            s3_settings(server, tmp_path, s3_bucket=f"igny8-{_unique()}")
        )
        fresh.put("log/images/1.png", b"x", "image/png")  # logs the bucket's creation
        exercise()
    assert "created media bucket" in caplog.text
    assert secret not in caplog.text and key_id not in caplog.text
