"""GET /api/v1/images/{id}/file: a generated image's bytes, to its owner only.

The app runs with its real lifespan (TestClient), so the media store is the one the
settings choose: a local folder under this test's tmp_path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session

from api.deps import get_media_store
from api.main import create_app
from core.settings import Settings
from domain.accounts import add_api_key
from models import Image
from providers.media_store import LocalMediaStore, image_key
from tests import builders

API = "/api/v1"
PNG = b"\x89PNG\r\n\x1a\n" + b"not really a picture" * 10
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg bytes" * 10


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
def app(db_url: str, media_dir: Path) -> FastAPI:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=db_url,
        media_dir=media_dir,
    )
    return create_app(settings, connect_temporal=False)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def generated(engine: sa.Engine, image: Image, file_path: str, mime_type: str) -> None:
    """Mark the image generated, its file under `file_path`, as the worker does."""
    with engine.begin() as conn:
        conn.execute(
            update(Image.__table__)
            .where(Image.__table__.c.id == image.id)
            .values(status="generated", file_path=file_path, mime_type=mime_type)
        )


def second_pending_image(engine: sa.Engine, image: Image) -> Image:
    """Another (pending) image of the same task and account."""
    with Session(engine, expire_on_commit=False) as session:
        other = Image(
            account_id=image.account_id,
            site_id=image.site_id,
            task_id=image.task_id,
            image_type="in_article",
            position=1,
            prompt="a second cup",
        )
        session.add(other)
        session.commit()
        return other


@pytest.fixture
def owned(engine: sa.Engine, media_dir: Path) -> tuple[str, Image]:
    """(owner's API key, a generated PNG stored under its key in the media folder)."""
    acct, image = builders.pending_image(engine)
    key = image_key(acct, image.id, "image/png")
    LocalMediaStore(media_dir).put(key, PNG, "image/png")
    generated(engine, image, key, "image/png")
    return add_api_key(engine, acct), image


def test_owner_gets_the_exact_bytes_privately_cached(
    client: TestClient, owned: tuple[str, Image]
) -> None:
    api_key, image = owned
    response = client.get(f"{API}/images/{image.id}/file", headers=auth(api_key))
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"].startswith("private")
    assert response.headers["x-content-type-options"] == "nosniff"


def test_old_rows_with_an_absolute_path_under_the_media_dir_still_serve(
    client: TestClient, engine: sa.Engine, owned: tuple[str, Image], media_dir: Path
) -> None:
    api_key, image = owned
    legacy = media_dir / "legacy" / f"{image.id}.jpg"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(JPEG)
    generated(engine, image, str(legacy), "image/jpeg")
    response = client.get(f"{API}/images/{image.id}/file", headers=auth(api_key))
    assert response.status_code == 200
    assert (response.content, response.headers["content-type"]) == (JPEG, "image/jpeg")


def test_anyone_but_the_owner_and_unknown_ids_get_404(
    client: TestClient, engine: sa.Engine, owned: tuple[str, Image]
) -> None:
    api_key, image = owned
    _, other_key = builders.account(engine)
    response = client.get(f"{API}/images/{image.id}/file", headers=auth(other_key))
    assert response.status_code == 404
    assert response.json() == {"detail": f"Image {image.id} not found"}
    unknown = client.get(f"{API}/images/{image.id + 1000}/file", headers=auth(api_key))
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": f"Image {image.id + 1000} not found"}
    assert client.get(f"{API}/images/{image.id}/file").status_code == 401


def test_pending_images_and_missing_files_are_404(
    client: TestClient, engine: sa.Engine, owned: tuple[str, Image], media_dir: Path
) -> None:
    api_key, image = owned
    pending = second_pending_image(engine, image)
    response = client.get(f"{API}/images/{pending.id}/file", headers=auth(api_key))
    assert response.status_code == 404
    assert "has no file (status: pending)" in response.json()["detail"]

    (media_dir / image_key(image.account_id, image.id, "image/png")).unlink()
    response = client.get(f"{API}/images/{image.id}/file", headers=auth(api_key))
    assert response.status_code == 404
    assert "missing from storage" in response.json()["detail"]


class _BrokenStore:
    name = "broken"

    def get(self, key: str) -> bytes:
        raise ConnectionError("object store unreachable")


def test_a_store_that_cannot_answer_is_503_and_the_store_can_be_swapped(
    app: FastAPI, owned: tuple[str, Image]
) -> None:
    api_key, image = owned
    app.dependency_overrides[get_media_store] = _BrokenStore
    with TestClient(app) as client:
        response = client.get(f"{API}/images/{image.id}/file", headers=auth(api_key))
    assert response.status_code == 503
    assert response.json() == {"detail": "The media store is unavailable"}


def test_the_route_is_documented_as_image_bytes(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"][f"{API}/images/{{image_id}}/file"]
    content = operation["get"]["responses"]["200"]["content"]
    assert {"image/png", "image/jpeg", "image/webp"} <= set(content)
    assert "404" in operation["get"]["responses"]
