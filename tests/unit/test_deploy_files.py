"""compose.yaml, Containerfile and the Prometheus config, checked without a Docker engine:
they parse, and every command, setting and port they name exists in flowrt."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from flowrt.cli import build_parser
from flowrt.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
VARIABLES = {var for var, _help in SETTINGS.values()}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def _scripts() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts: dict[str, str] = project["project"]["scripts"]
    return scripts


def _subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)  # type: ignore[arg-type]


def test_compose_has_the_production_services_with_health_checks() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "prometheus"} <= set(services)
    for name, svc in services.items():
        if name != "migrate":  # a one-shot job: its health is its exit status
            assert "healthcheck" in svc, f"{name} has no health check"
    assert services["prometheus"]["profiles"] == ["prometheus"]
    assert "noeviction" in services["redis"]["command"]
    for name in ("api", "worker"):
        dep = services[name]["depends_on"]["migrate"]
        assert dep == {"condition": "service_completed_successfully"}


def test_compose_commands_are_flowrt_entry_points() -> None:
    scripts = _scripts()
    services = _compose()["services"]
    for name in ("migrate", "api", "worker"):
        command = services[name]["command"]
        assert command[0] in scripts, command
        if command[0] == "flowrt":
            assert command[1] in _subcommands(), command
    worker = services["worker"]["command"]
    module, _, attr = worker[worker.index("--app") + 1].partition(":")
    assert hasattr(importlib.import_module(module), attr)


def test_compose_only_names_real_settings() -> None:
    text = (ROOT / "compose.yaml").read_text()
    named = set(re.findall(r"\bFLOWRT_[A-Z_]+\b", text))
    assert named, "compose.yaml sets no FLOWRT_ variable"
    assert named <= VARIABLES, named - VARIABLES
    api_env = _compose()["services"]["api"]["environment"]
    assert api_env["FLOWRT_PORT"] == "8000"


def test_prometheus_scrapes_the_ports_compose_serves() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["flowrt-api"]["static_configs"][0]["targets"] == ["api:8000"]
    worker = jobs["flowrt-worker"]["dns_sd_configs"][0]
    assert worker["names"] == ["worker"] and worker["port"] == 9100
    worker_env = _compose()["services"]["worker"]["environment"]
    assert worker_env["FLOWRT_METRICS_PORT"] == "9100"


def test_containerfile_is_multi_stage_non_root_with_sql_and_workers() -> None:
    text = (ROOT / "Containerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^COPY sql ", text, re.M) and re.search(r"^COPY workers ", text, re.M)
    assert re.search(r'^CMD \["flowrt", "api"\]', text, re.M)


def test_entry_points_exist_in_the_package() -> None:
    for name, target in _scripts().items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name
    assert {"flowrt", "flowrt-worker"} <= set(_scripts())
