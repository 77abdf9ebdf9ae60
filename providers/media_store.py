"""Where generated images live: one interface, a local folder (the default) or
S3-compatible object storage (production, MinIO in docker-compose), chosen by settings.

Rows store a *key* (`<account>/images/<image id>.<ext>`), never a host's path, so workers
and the API on different hosts see the same files. The methods are synchronous: callers
run them in a thread (activities in the worker's executor, the API in its thread pool).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from core.settings import Settings

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
CONTENT_TYPES = {ext: mime for mime, ext in EXTENSIONS.items()}


class MediaNotFound(Exception):
    """No object under that key."""


@runtime_checkable
class MediaStore(Protocol):
    """Put, get, check and delete image bytes by key; `put` is atomic (no half files)."""

    name: str

    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def discard_partial(self, key: str) -> None:
        """Remove what a killed writer of `key` may have left (a no-op where puts are
        atomic on the server, as in S3)."""
        ...


def image_key(account_id: int, image_id: int, mime_type: str) -> str:
    """The key of an image's file, the same on every host and store."""
    return f"{account_id}/images/{image_id}.{EXTENSIONS.get(mime_type, 'png')}"


def content_type_of(key: str) -> str:
    return CONTENT_TYPES.get(key.rsplit(".", 1)[-1].lower(), "application/octet-stream")


def _checked_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid media key {key!r}")
    return key


def checked_key(key: str) -> str:
    """`key` if every store may use it: relative, no empty, `.` or `..` parts. One rule
    for all stores, so a key that works locally also works on S3 and the other way round."""
    return _checked_key(key)


class LocalMediaStore:
    """A folder (MEDIA_DIR). Writes go to a per-call temporary name, then `os.replace`,
    so a killed writer leaves no half-written image under the key."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file behind `key`. Rows written before keys existed hold an absolute path
        under the root; that is still accepted, nothing outside the root is."""
        if key.startswith("/"):
            path = Path(key).resolve()
            if self.root.resolve() not in path.parents:
                raise ValueError(f"invalid media key {key!r}")
            return path
        return self.root / _checked_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise MediaNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def discard_partial(self, key: str) -> None:
        """A killed `put` leaves its temporary file; only a retry looks (it is a scan)."""
        path = self.path(key)
        if path.parent.is_dir():
            for stale in path.parent.glob(f".{path.name}.*.part"):
                stale.unlink(missing_ok=True)


def media_store_from_settings(settings: Settings) -> MediaStore:
    """The store the settings choose (MEDIA_STORE=local|s3)."""
    if getattr(settings, "media_store", "local") == "s3":
        from providers.s3_media_store import S3MediaStore

        return S3MediaStore.from_settings(settings)
    assert settings.media_dir is not None
    return LocalMediaStore(settings.media_dir)
