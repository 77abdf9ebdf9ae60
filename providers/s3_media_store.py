"""Images in S3-compatible object storage: AWS S3 in production, MinIO in docker-compose.

The API and every worker read and write the same bucket, so none of them needs a disk
shared with the others. Objects live at `<S3_PREFIX>/<key>`, keys as `image_key` makes
them (`<account>/images/<image id>.<ext>`), so rows stay valid whichever store wrote them.

The bucket is created on first use when it is missing (HeadBucket answers 404), which is
what MinIO in docker-compose, moto in the tests and a developer's own bucket want. In AWS
production create the bucket beforehand (with its region, encryption and lifecycle rules)
and give the credentials s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on
it: without ListBucket S3 answers 403 instead of 404 for a missing key, and `exists` and
`get` then raise instead of reporting "missing". A HeadBucket that answers 403 is taken
to mean the bucket exists and the role may not inspect it; the object calls then tell.

One client per store, made in the constructor: boto3 clients are thread-safe, sessions
and client creation are not, and the store is called from many threads at once.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from providers.media_store import MediaNotFound, checked_key

if TYPE_CHECKING:
    from pydantic import SecretStr

    from core.settings import Settings

log = logging.getLogger("igny8.media")

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
# Attempts in total, the first included; "standard" retries throttling, 5xx and broken
# connections with jittered exponential back-off. Activities retry on top of this.
MAX_ATTEMPTS = 3
# Threads beyond the pool size still get a connection, but a throwaway one (and urllib3
# warns); the worker runs many activities at once, so keep plenty.
MAX_POOL_CONNECTIONS = 64
_MISSING_CODES = {"NoSuchKey", "NotFound", "404"}


def client_config(endpoint_url: str | None) -> Config:
    """Bounded waits and retries. Path-style addressing for a custom endpoint: MinIO and
    moto serve `http://host:9000/<bucket>/<key>`, not `<bucket>.host` (no such DNS name)."""
    return Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        max_pool_connections=MAX_POOL_CONNECTIONS,
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )


def _error(exc: ClientError) -> tuple[str, int]:
    """(error code, HTTP status); HEAD answers carry no body, so only the status tells."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return code, status


def _is_missing_object(exc: ClientError) -> bool:
    code, status = _error(exc)
    return code in _MISSING_CODES or (status == 404 and code != "NoSuchBucket")


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


class S3MediaStore:
    """A bucket (and an optional key prefix in it). `put` is one PutObject: S3 stores the
    whole object or nothing, so no reader ever sees half an image."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        if not bucket.strip():
            raise ValueError("S3MediaStore needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        # No keys: boto3's own chain (AWS_* variables, a profile, an IAM role).
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=client_config(endpoint_url),
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3MediaStore:
        """The store MEDIA_STORE=s3 and the S3_* settings describe."""
        return cls(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=_reveal(settings.s3_access_key_id),
            secret_access_key=_reveal(settings.s3_secret_access_key),
        )

    def __repr__(self) -> str:  # never the credentials
        return (
            f"S3MediaStore(bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint_url={self.endpoint_url!r})"
        )

    def object_key(self, key: str) -> str:
        """The object's name in the bucket: the checked key under the prefix."""
        key = checked_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._ready().put_object(
            Bucket=self.bucket, Key=self.object_key(key), Body=data, ContentType=content_type
        )

    def get(self, key: str) -> bytes:
        try:
            response = self._ready().get_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _is_missing_object(exc):
                raise MediaNotFound(key) from exc
            raise
        body = response["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()  # the connection goes back to the pool

    def content_type(self, key: str) -> str:
        """The Content-Type stored with the object (what a browser would be served)."""
        return str(self._head(key)["ContentType"])

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except MediaNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """Idempotent: S3 answers 204 for a missing key; some compatible servers say 404."""
        try:
            self._ready().delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if not _is_missing_object(exc):
                raise

    def discard_partial(self, key: str) -> None:
        """Nothing to do: an S3 PUT is atomic, a killed upload leaves no object."""
        checked_key(key)

    def _head(self, key: str) -> dict[str, Any]:
        try:
            return dict(self._ready().head_object(Bucket=self.bucket, Key=self.object_key(key)))
        except ClientError as exc:
            if _is_missing_object(exc):
                raise MediaNotFound(key) from exc
            raise

    def _ready(self) -> Any:
        """The client, once the bucket is known to exist. Checked on first use, not in the
        constructor, so a process starts while the object store is still coming up; a
        failed check is tried again on the next call."""
        if not self._bucket_ready:
            with self._bucket_lock:
                if not self._bucket_ready:
                    self._ensure_bucket()
                    self._bucket_ready = True
        return self._client

    def _ensure_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            _, status = _error(exc)
            if status == 403:
                return  # exists, but this role may not inspect it (see the module doc)
            if status != 404:
                raise
        self._create_bucket()

    def _create_bucket(self) -> None:
        """Create it; another process creating it at the same moment is fine too."""
        region = self._client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":  # us-east-1 refuses an explicit constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**kwargs)
        except ClientError as exc:
            if _error(exc)[0] != "BucketAlreadyOwnedByYou":
                raise
            return
        log.info("created media bucket %s", self.bucket)
