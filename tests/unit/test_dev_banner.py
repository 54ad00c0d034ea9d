"""What ``flowrt dev`` prints: never a password from a URL the user gave."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowrt.dev import _banner
from flowrt.settings import Settings


def test_the_dev_banner_masks_passwords(capsys: pytest.CaptureFixture[str]) -> None:
    s = Settings(database_url="postgresql://u:pg-secret@db:5432/flowrt",
                 redis_url="redis://:redis-secret@cache:6379/0")
    _banner(s, "http://127.0.0.1:8000", [9101], None, None, Path(".flowrt/dev"), "frk_key")
    out = capsys.readouterr()
    text = out.out + out.err
    assert "pg-secret" not in text and "redis-secret" not in text
    assert "postgresql://u:***@db:5432/flowrt" in text and "redis://:***@cache:6379/0" in text
