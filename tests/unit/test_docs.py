"""docs/operations.md lists every setting and every metric that exists, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from flowrt.metrics import Metrics
from flowrt.settings import SETTINGS, Settings

OPERATIONS = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()


def test_every_setting_is_documented_with_its_default() -> None:
    defaults = Settings()
    rows = dict(re.findall(r"^\| `(FLOWRT_[A-Z_]+)` \| `([^`]*)` \|", OPERATIONS, re.M))
    assert set(rows) == {var for var, _help in SETTINGS.values()}
    for name, (var, _help) in SETTINGS.items():
        if name != "database_url":  # the documented default hides no password either way
            assert rows[var] == str(getattr(defaults, name)), var


def test_every_metric_is_documented_with_its_type() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    # prometheus_client reports counters without their _total suffix
    exported = {f"{m.name}_total" if m.type == "counter" else m.name: m.type
                for m in registry.collect()}
    documented = dict(re.findall(r"^\| `(flowrt_[a-z_]+)[^`]*` \| ([a-z]+) \|", OPERATIONS, re.M))
    assert documented == exported
    assert all(name.endswith("_total") for name, kind in exported.items() if kind == "counter")
