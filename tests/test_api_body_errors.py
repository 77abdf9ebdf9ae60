"""A body the API cannot decode gets an answer the OpenAPI document lists, in the shape it
lists: FastAPI itself answers 400 `{"detail": ...}` before the route runs (api.errors
documents it on every route whose body FastAPI reads); a route that reads its body by hand
answers what it documents.

SQLite only: these answers come before any database work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.main import create_app
from core.settings import Settings
from providers.jsonschema_lite import validate
from tests import builders, dbs

API = "/api/v1"
ADMIN_KEY = "test-admin"
NOT_UTF8 = b'{"name": "\xff"}'
TOO_DEEP = b"[" * 100_000 + b"]" * 100_000  # beyond the JSON parser's recursion limit
UNDECODABLE = [pytest.param(NOT_UTF8, id="not-utf8"), pytest.param(TOO_DEEP, id="too-deep")]
# Reads its body itself (JSON, CSV or a form): bytes that are not UTF-8 are its 422
# `json_invalid`, which it documents.
KEYWORD_IMPORT = ("post", f"{API}/sites/{{site_id}}/keywords")
HAND_READ = {KEYWORD_IMPORT}

Operation = tuple[str, str]  # method, path as the OpenAPI document spells them


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """A migrated SQLite database of this test's own: its URL and an engine on it."""
    url = dbs.create_sqlite_database(tmp_path)
    engine = dbs.engine_for(url)
    yield url, engine
    engine.dispose()


@pytest.fixture
def client(tmp_path: Path, sqlite_db: tuple[str, Engine]) -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=sqlite_db[0],
        admin_api_key=ADMIN_KEY,
        data_dir=tmp_path,
    )
    with TestClient(create_app(settings, connect_temporal=False)) as test_client:
        yield test_client


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()


@pytest.fixture
def path_values(sqlite_db: tuple[str, Engine]) -> dict[str, Any]:
    """Real objects for every path parameter, and the account key that may see them."""
    engine = sqlite_db[1]
    account_id, key = builders.account(engine)
    site = builders.site(engine, account_id)
    model = builders.model_config(engine, model_name="gpt-image-1", model_type="image")
    return {
        "account_id": account_id,
        "site_id": site.id,
        "model_name": model.model_name,
        "run_id": "automation-1-1-x",  # the 400 comes before the route looks anything up
        "content_id": 1,
        "key": key,
    }


def json_body_operations(openapi: dict[str, Any]) -> dict[Operation, dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in openapi["paths"].items()
        for method, operation in item.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    }


def send(client: TestClient, values: dict[str, Any], op: Operation, body: bytes) -> Any:
    method, path = op
    url = path.format(**{k: v for k, v in values.items() if f"{{{k}}}" in path})
    key = ADMIN_KEY if path.startswith(f"{API}/admin") else values["key"]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return client.request(method.upper(), url, content=body, headers=headers)


def resolved(schema: Any, components: dict[str, Any]) -> Any:
    """`schema` with every `$ref` to a component replaced by the component itself."""
    if isinstance(schema, list):
        return [resolved(item, components) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return resolved(components[schema["$ref"].rsplit("/", 1)[1]], components)
    return {key: resolved(value, components) for key, value in schema.items()}


def documented_schema(openapi: dict[str, Any], op: dict[str, Any], status: int) -> Any:
    response = op["responses"].get(str(status))
    assert response is not None, f"{status} is not documented"
    return response["content"]["application/json"]["schema"]


def test_every_route_whose_body_fastapi_reads_documents_the_400(openapi: dict[str, Any]) -> None:
    ops = json_body_operations(openapi)
    assert set(ops) > HAND_READ, "the JSON-body routes, or the hand-read one, went missing"
    listing_400 = {key for key, op in ops.items() if "400" in op["responses"]}
    assert listing_400 == set(ops) - HAND_READ
    for key in listing_400:
        error_400 = documented_schema(openapi, ops[key], 400)
        assert error_400 == {"$ref": "#/components/schemas/ErrorMessage"}, key
        assert error_400 == documented_schema(openapi, ops[key], 401), f"{key}: unlike a 401"
    assert openapi["components"]["schemas"]["ErrorMessage"]["required"] == ["detail"]


@pytest.mark.parametrize("body", UNDECODABLE)
def test_an_undecodable_body_gets_the_documented_400_in_its_documented_shape(
    client: TestClient, openapi: dict[str, Any], path_values: dict[str, Any], body: bytes
) -> None:
    components = openapi["components"]["schemas"]
    for key, op in json_body_operations(openapi).items():
        if key in HAND_READ:
            continue
        answer = send(client, path_values, key, body)
        assert answer.status_code == 400, (key, answer.status_code, answer.text)
        schema = resolved(documented_schema(openapi, op, 400), components)
        assert validate(answer.json(), schema) == [], (key, answer.text)


def test_the_hand_read_body_answers_what_it_documents(
    client: TestClient, openapi: dict[str, Any], path_values: dict[str, Any]
) -> None:
    components = openapi["components"]["schemas"]
    op = json_body_operations(openapi)[KEYWORD_IMPORT]
    answer = send(client, path_values, KEYWORD_IMPORT, NOT_UTF8)
    assert answer.status_code == 422, answer.text
    schema = resolved(documented_schema(openapi, op, 422), components)
    assert validate(answer.json(), schema) == [], answer.text
    assert answer.json()["detail"][0]["type"] == "json_invalid"


def test_the_hand_read_body_nested_too_deeply_is_not_a_500(
    client: TestClient, path_values: dict[str, Any]
) -> None:
    answer = send(client, path_values, KEYWORD_IMPORT, TOO_DEEP)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["type"] == "json_invalid", answer.text
