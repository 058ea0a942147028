"""Start-up checks of the broker and Redis, so a supervisor gets a clear message and a distinct exit code
instead of a library traceback (Faust exits 1 with an aiokafka stack trace when it cannot bootstrap).

Each dependency is retried with capped back-off until `startup_timeout` seconds pass; every failed attempt
is logged (without credentials). A refused credential is not retried: waiting cannot fix a wrong password,
so it fails at once and says "authentication failed" rather than "unreachable". Exit codes: 3 = broker
unreachable or refusing the credentials, 4 = the same for Redis (2 is a bundle or settings problem, see
worker.app).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from connect.kafka import aiokafka_kwargs, bootstrap_servers
from worker.client_security import redis_client
from worker.settings import Settings, mask_url

log = logging.getLogger("regimetry.worker")

EXIT_BROKER_UNREACHABLE = 3
EXIT_REDIS_UNREACHABLE = 4


class PreflightError(RuntimeError):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def is_auth_failure(exc: BaseException, _depth: int = 0) -> bool:
    """A credential the server refused (Redis AUTH/ACL, Kafka SASL): permanent, unlike a connection failure."""
    from aiokafka import errors as kafka_errors
    from redis import exceptions as redis_errors

    permanent = (
        redis_errors.AuthenticationError,
        redis_errors.AuthenticationWrongNumberOfArgsError,
        kafka_errors.SaslAuthenticationFailed,
        kafka_errors.AuthenticationFailedError,
        kafka_errors.UnsupportedSaslMechanismError,
    )
    if isinstance(exc, permanent):
        return True
    text = str(exc)  # older servers answer a bad password with a plain error reply
    if isinstance(exc, redis_errors.ResponseError) and ("WRONGPASS" in text or "invalid password" in text):
        return True
    # the cluster client wraps what its seed nodes answered ("Redis Cluster cannot be connected ...")
    cause = exc.__cause__ or exc.__context__
    return cause is not None and _depth < 5 and is_auth_failure(cause, _depth + 1)


async def _retry(what: str, attempt: Callable[[], Awaitable[None]], timeout: float, exit_code: int, hint: str) -> None:
    deadline = time.monotonic() + timeout
    delay, tries = 0.2, 0
    while True:
        tries += 1
        try:
            await attempt()
            return
        except Exception as exc:  # any failure to connect counts; the last one is reported
            if is_auth_failure(exc):
                raise PreflightError(
                    f"{what} authentication failed ({type(exc).__name__}: {exc}); {hint}", exit_code
                ) from None
            if time.monotonic() + delay > deadline:
                raise PreflightError(
                    f"{what} unreachable after {tries} attempts in {timeout:.0f} s "
                    f"({type(exc).__name__}: {exc}); {hint}",
                    exit_code,
                ) from None
            log.warning("%s not reachable yet (%s); retrying in %.1f s", what, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _kafka_once(s: Settings) -> None:
    from aiokafka import AIOKafkaClient

    kwargs: dict = {**aiokafka_kwargs(s), "request_timeout_ms": 5000}
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers(s.broker_url), **kwargs)
    try:
        await client.bootstrap()
    finally:
        await client.close()


async def _redis_once(s: Settings) -> None:
    client = redis_client(s)
    try:
        if s.redis_cluster:  # every primary answers and the cluster serves every slot
            from redis.asyncio.cluster import RedisCluster

            await client.ping(target_nodes=RedisCluster.PRIMARIES)
            state = (await client.cluster_info()).get("cluster_state")
            if state != "ok":
                raise ConnectionError(f"Redis Cluster reports cluster_state:{state}")
        else:
            await client.ping()
    finally:
        await client.aclose()


async def check_dependencies(s: Settings) -> None:
    """Raise PreflightError (with its exit code) if the broker or Redis stays unreachable."""
    await _retry(
        f"Kafka broker {mask_url(s.broker_url)}",
        lambda: _kafka_once(s),
        s.startup_timeout,
        EXIT_BROKER_UNREACHABLE,
        "check REGIMETRY_BROKER_URL and the REGIMETRY_KAFKA_* security settings",
    )
    await _retry(
        f"Redis {mask_url(s.redis_url)}",
        lambda: _redis_once(s),
        s.startup_timeout,
        EXIT_REDIS_UNREACHABLE,
        "check REGIMETRY_REDIS_URL, REGIMETRY_REDIS_CLUSTER, REGIMETRY_REDIS_PASSWORD and REGIMETRY_REDIS_TLS",
    )
