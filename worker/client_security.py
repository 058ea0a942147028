"""Client settings for Kafka and Redis built from Settings: TLS and SASL passthrough in one place.

Kept apart from the app so the security wiring can be tested without a broker, and so secrets flow from
Settings straight into client constructors and never through a log line.
"""

from __future__ import annotations

from connect.kafka import kafka_ssl_context
from worker.settings import Settings


def faust_credentials(s: Settings):
    """faust broker_credentials for SASL_* / SSL protocols, None for PLAINTEXT."""
    import faust

    protocol = s.kafka_security_protocol.upper()
    ctx = kafka_ssl_context(s)
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=s.kafka_sasl_username,
            password=s.kafka_sasl_password,
            mechanism=s.kafka_sasl_mechanism,
            ssl_context=ctx,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(ctx)
    return None


def redis_client(s: Settings):
    """An asyncio Redis client; a password and TLS come from settings (or the URL: redis://:pw@, rediss://).

    With REGIMETRY_REDIS_CLUSTER a Redis Cluster client (redis.asyncio.cluster.RedisCluster) on the same
    password, TLS and timeouts; the URL then names one or more seed nodes (`redis://h1:6379;redis://h2:6379`,
    `;` or `,` between them), from which the client discovers the rest."""
    import redis.asyncio as aioredis

    kwargs: dict = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, "health_check_interval": 10}
    if s.redis_password:
        kwargs["password"] = s.redis_password
    if s.redis_tls and not s.redis_url.startswith("rediss://"):
        kwargs["ssl"] = True
    if s.redis_tls or s.redis_url.startswith("rediss://"):
        if s.redis_tls_cafile:
            kwargs["ssl_ca_certs"] = s.redis_tls_cafile
    if s.redis_cluster:
        return redis_cluster_client(s.redis_url, kwargs)
    return aioredis.Redis.from_url(s.redis_url, **kwargs)


def redis_seed_urls(url: str) -> list[str]:
    """The seed nodes of a cluster URL setting: `redis://h1:6379;redis://h2:6379` (or `,` between them)."""
    return [u.strip() for u in url.replace(",", ";").split(";") if u.strip()]


def redis_cluster_client(url: str, kwargs: dict):
    """redis.asyncio.cluster.RedisCluster bootstrapping from every seed of `url`; credentials, TLS (rediss://)
    and query-string options come from the URLs as for a single Redis, `kwargs` (settings) win over them.
    A cluster has database 0 only: another number in the URL is refused here rather than by the client."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.connection import SSLConnection, parse_url

    from connect.settings import SettingsError, mask_url

    seeds: list = []
    options: dict[str, object] = {}
    for u in redis_seed_urls(url):
        parsed = parse_url(u)
        if parsed.pop("db", 0) not in (0, None):
            raise SettingsError(f"REGIMETRY_REDIS_URL={mask_url(u)}: a Redis Cluster has database 0 only")
        if parsed.pop("connection_class", None) is SSLConnection:
            options["ssl"] = True
        seeds.append(ClusterNode(parsed.pop("host", "127.0.0.1"), int(parsed.pop("port", 6379))))
        for k, v in parsed.items():
            options.setdefault(k, v)
    if not seeds:
        raise SettingsError("REGIMETRY_REDIS_URL names no Redis Cluster node")
    return RedisCluster(startup_nodes=seeds, **{**options, **kwargs})
