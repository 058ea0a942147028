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
    """An asyncio Redis client; a password and TLS come from settings (or the URL: redis://:pw@, rediss://)."""
    import redis.asyncio as aioredis

    kwargs: dict = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, "health_check_interval": 10}
    if s.redis_password:
        kwargs["password"] = s.redis_password
    if s.redis_tls and not s.redis_url.startswith("rediss://"):
        kwargs["ssl"] = True
    if s.redis_tls or s.redis_url.startswith("rediss://"):
        if s.redis_tls_cafile:
            kwargs["ssl_ca_certs"] = s.redis_tls_cafile
    return aioredis.Redis.from_url(s.redis_url, **kwargs)
