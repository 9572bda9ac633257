"""Quota tests use a private redis-server (tests/redis_server.py) where they need Redis."""

from tests.redis_server import redis_server, stoppable_redis

__all__ = ["redis_server", "stoppable_redis"]
