"""The testcontainers path: real containers when a Docker daemon answers, else a clean skip."""

from __future__ import annotations

import pytest
import redis

from tests.conftest import _docker_answers


def test_redis_from_testcontainers() -> None:
    if not _docker_answers():
        pytest.skip("no Docker daemon answers: the testcontainers path cannot run here")
    from testcontainers.redis import RedisContainer

    with RedisContainer("redis:7-alpine") as container:
        client = redis.Redis(host=container.get_container_host_ip(),
                             port=int(container.get_exposed_port(6379)))
        assert client.ping() is True
        client.close()
