"""One way to open Redis for alerts, for the sidecar's sink and for consumers alike."""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster


def redis_client(url: str, cluster: bool = False, **kwargs) -> redis.Redis | RedisCluster:
    """A client for the Redis at ``url``; with ``cluster``, for the Redis Cluster
    that ``url`` is one node of.

    A cluster client learns the slot map from that node and sends each command
    to the shard owning its key. Alerts use one stream key per command, so a
    stream and its consumer group simply live on the shard that owns the key;
    a plain client would get ``MOVED`` for keys its node does not own.
    """
    if cluster:
        return RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)
