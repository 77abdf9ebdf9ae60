"""Settings: placeholder secrets are refused in production; paths follow DATA_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings


def test_production_refuses_placeholder_secrets():
    with pytest.raises(ValidationError, match="ADMIN_API_KEY is a placeholder"):
        Settings(_env_file=None, environment="production")
    ok = Settings(
        _env_file=None, environment="production", admin_api_key="a" * 32, secret_key="b" * 32
    )
    assert "a" * 32 not in repr(ok)  # secrets never show in reprs or logs


def test_development_allows_placeholders_and_empty_keys_mean_the_simulator():
    s = Settings(_env_file=None, openai_api_key="", openai_base_url="  ")
    assert s.openai_api_key is None and s.uses_simulator


def test_paths_follow_data_dir(tmp_path: Path):
    s = Settings(_env_file=None, data_dir=tmp_path, database_url="")
    assert s.database_url == f"sqlite:///{tmp_path / 'igny8.db'}"
    assert s.media_dir == tmp_path / "media"
