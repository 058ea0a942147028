"""The Faust/aiokafka internals worker/kafka_boundary.py relies on are the ones it was written against.

Fails when an upgrade changes the source of a function the boundary overrides or calls (its recorded hash),
when something it awaits stops being a coroutine (or the other way round), or when the installed versions
leave the pinned range. Then: read the upstream change, adapt kafka_boundary.py, re-run the scale-out, crash
and broker-restart tests, and record the new hashes (the test prints them).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import textwrap

import pytest

from worker import kafka_boundary
from worker.kafka_boundary import ASYNC_GENERATORS, AWAITED, CONTRACT, TESTED


def resolve(name: str):
    """'module:Class.attr' -> the function as defined on that class (not inherited)."""
    module, _, path = name.partition(":")
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = obj.__dict__[part] if isinstance(obj, type) else getattr(obj, part)
    return obj


def source_hash(fn) -> str:
    return hashlib.sha256(textwrap.dedent(inspect.getsource(fn)).encode()).hexdigest()[:16]


def test_installed_versions_are_in_the_tested_range():
    from packaging.specifiers import SpecifierSet

    for dist, spec in TESTED.items():
        assert importlib.metadata.version(dist) in SpecifierSet(spec), (dist, importlib.metadata.version(dist))


def test_pyproject_and_docker_image_pin_the_tested_range():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pyproject = (root / "pyproject.toml").read_text()
    dockerfile = (root / "docker" / "worker.Dockerfile").read_text()
    for dist, spec in TESTED.items():
        assert f'"{dist}{spec}"' in pyproject, dist
        assert f"{dist}{spec}" in dockerfile, dist


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_overridden_and_used_functions_are_unchanged(name):
    got = source_hash(resolve(name))
    assert got == CONTRACT[name], f"{name} changed upstream: {got} (recorded {CONTRACT[name]}); see the docstring"


@pytest.mark.parametrize("name", sorted(AWAITED))
def test_what_the_fetch_loop_awaits_is_a_coroutine(name):
    assert inspect.iscoroutinefunction(resolve(name)) is AWAITED[name], name


@pytest.mark.parametrize("name", ASYNC_GENERATORS)
def test_getmany_is_an_async_generator(name):
    assert inspect.isasyncgenfunction(resolve(name)), name


def test_fetch_wait_default_is_still_hard_coded():
    """The override exists because Faust builds the consumer with fetch_max_wait_ms=1500; if that becomes a
    setting, use the setting instead."""
    src = inspect.getsource(resolve("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer"))
    assert "fetch_max_wait_ms=1500" in src
    start = inspect.getsource(resolve("aiokafka.consumer.consumer:AIOKafkaConsumer.start"))
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in start


def _app(name: str):
    import faust

    return faust.App(name, broker="kafka://127.0.0.1:1", web_enabled=False)


def test_install_scopes_the_consumer_to_this_app_and_caps_the_fetch_wait():
    """A second app in the process, and the faust/aiokafka modules, keep stock classes; the consumer the app's
    thread builds (through Faust's own _create_worker_consumer, not a copy of it) waits 37 ms."""
    import aiokafka
    import faust.transport.drivers.aiokafka as driver

    stock_consumer, stock_transport = driver.Transport.Consumer, driver.Transport
    ours, other = _app("boundary-ours"), _app("boundary-other")

    async def sink(messages: list) -> None:
        return None

    kafka_boundary.install(ours, 37, {"bars": sink})
    assert type(ours.transport).Consumer._drain_messages is not stock_consumer._drain_messages
    assert type(ours.transport) is not stock_transport and isinstance(ours.transport, stock_transport)
    assert type(other.transport) is stock_transport
    assert driver.Transport.Consumer is stock_consumer and driver.aiokafka is aiokafka

    async def build():
        # the path Faust takes at start: app.consumer -> transport.create_consumer -> Consumer.__init__ ->
        # _new_consumer_thread; the thread's on_start -> _create_consumer -> _create_worker_consumer
        consumer = ours.consumer
        assert type(consumer) is ours.transport.Consumer and type(consumer) is not stock_consumer
        return consumer._thread._create_consumer(loop=asyncio.get_running_loop())

    client = asyncio.run(build())
    assert isinstance(client, aiokafka.AIOKafkaConsumer) and client._fetch_max_wait_ms == 37


@pytest.mark.parametrize("direct", [True, False])
def test_direct_records_false_builds_stock_faust(tiny_bundle, direct):
    """REGIMETRY_DIRECT_RECORDS=false: the worker's app has Faust's own transport, consumer and Monitor."""
    import faust.transport.drivers.aiokafka as driver
    from faust.sensors.monitor import Monitor

    from worker.app import Runtime, create_app
    from worker.settings import load_settings

    settings = load_settings({}, bundle=str(tiny_bundle), direct_records=direct, reload_interval=0)
    app = create_app(settings, Runtime(settings))
    stock = type(app.transport) is driver.Transport and app.conf.Monitor is Monitor
    assert stock is not direct
    assert type(app.transport).Consumer._drain_messages is driver.Consumer._drain_messages or direct


@pytest.mark.parametrize("instance", ["worker-a", ""])
def test_static_membership_reaches_the_aiokafka_consumer(tiny_bundle, instance):
    """Issue 14, defect 8: with REGIMETRY_GROUP_INSTANCE_ID the consumer joins as a static member
    (group.instance.id), so a worker restarted after a SIGKILL under the same id takes its partitions back
    without waiting out its predecessor's session timeout (benchmarks/bench_restart.py measures it); unset, the
    membership stays dynamic."""
    import aiokafka

    from worker.app import Runtime, create_app
    from worker.settings import load_settings

    settings = load_settings({}, bundle=str(tiny_bundle), group_instance_id=instance, reload_interval=0)
    app = create_app(settings, Runtime(settings))

    async def build():
        return app.consumer._thread._create_consumer(loop=asyncio.get_running_loop())

    client = asyncio.run(build())
    assert isinstance(client, aiokafka.AIOKafkaConsumer)
    assert client._group_instance_id == (instance or None)
