"""The runner's order of side effects and the delivery's error policy, with fakes (no broker, no Redis).

Delivery retries broker errors only; a programming error in any step reaches the exit-on-bug path
(EXIT_BROKEN_BATCH, 70) without acknowledging the batch.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaConnectionError

from worker.batching import MicroBatcher
from worker.delivery import Delivery
from worker.runner import EXIT_BROKEN_BATCH, Runner

DEADLINE = 10.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, DEADLINE))


class FakeSender:
    """Fails with `errors` (one per call) before it succeeds; records each call's messages."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls: list[list] = []
        self.forgotten = 0

    def forget(self) -> None:
        self.forgotten += 1

    async def send(self, messages: list) -> list:
        self.calls.append(list(messages))
        if self.errors:
            raise self.errors.pop(0)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return [done]


MESSAGES = [("regime-events", b"S", b"{}")]


@pytest.mark.parametrize("error", [OSError("down"), KafkaConnectionError(), TimeoutError(), ConnectionError()])
def test_delivery_retries_broker_errors_and_resends_everything(error):
    sender = FakeSender(error, error)
    run(Delivery(sender, retry_max_seconds=0.01).deliver(MESSAGES))
    assert sender.calls == [MESSAGES] * 3 and sender.forgotten == 2


@pytest.mark.parametrize("error", [TypeError("bug"), KeyError("bug"), AssertionError("bug")])
def test_delivery_does_not_retry_a_programming_error(error):
    sender = FakeSender(error)
    with pytest.raises(type(error)):
        run(Delivery(sender, retry_max_seconds=0.01).deliver(MESSAGES))
    assert len(sender.calls) == 1


def message(i: int):
    return SimpleNamespace(key=b"S", value=str(i).encode(), offset=i)


def make_runner(log: list, deliver_error: BaseException | None = None, exits: list | None = None) -> Runner:
    async def process(messages, checked):
        log.append(("process", [m.offset for m in messages]))
        return [m.offset for m in messages]

    async def deliver(out):
        log.append(("deliver", out))
        await asyncio.sleep(0.01)
        if deliver_error is not None:
            raise deliver_error
        log.append(("delivered", out))

    def exit_(code: int) -> None:
        assert exits is not None
        exits.append(code)

    return Runner(
        MicroBatcher(max_size=2, within=0.0),
        check=lambda key, value: value,
        process=process,
        deliver=deliver,
        ack=lambda m: log.append(("ack", m.offset)),
        record=lambda out, t0: log.append(("record", out)),
        exit=exit_,
    )


def test_steps_run_in_commit_order_and_batches_send_in_order():
    async def scenario():
        log: list = []
        runner = make_runner(log)
        await runner.accept([message(i) for i in range(4)])
        task = asyncio.ensure_future(runner.run())
        while sum(1 for e in log if e[0] == "record") < 2:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return log

    log = run(scenario())
    # batch 2 is processed while batch 1 delivers, but sends only after batch 1 is acked
    assert [e for e in log if e[0] != "process"] == [
        ("deliver", [0, 1]),
        ("delivered", [0, 1]),
        ("ack", 0),
        ("ack", 1),
        ("record", [0, 1]),
        ("deliver", [2, 3]),
        ("delivered", [2, 3]),
        ("ack", 2),
        ("ack", 3),
        ("record", [2, 3]),
    ]
    assert log.index(("process", [2, 3])) < log.index(("delivered", [0, 1]))


def test_accept_tracks_and_validates_each_record():
    tracked: list = []

    async def scenario():
        runner = make_runner([])
        await runner.accept([message(0), message(1)], track=tracked.append)
        return await runner.batches.take()

    batch = run(scenario())
    assert [m.offset for m in tracked] == [0, 1]
    assert [(m.offset, checked) for m, checked in batch] == [(0, b"0"), (1, b"1")]


def test_a_bug_in_delivery_exits_without_acknowledging():
    async def scenario():
        log: list = []
        exits: list = []
        runner = make_runner(log, deliver_error=TypeError("a bug"), exits=exits)
        await runner.accept([message(0)])
        task = asyncio.ensure_future(runner.run())
        while not exits:
            await asyncio.sleep(0.005)
        task.cancel()
        return log, exits

    log, exits = run(scenario())
    assert exits == [EXIT_BROKEN_BATCH]
    assert not [e for e in log if e[0] in ("ack", "record")]


def test_the_default_exit_is_the_process_exit_code_70():
    """Without a test hook the runner ends the process with os._exit(70): no finally block, no Faust shutdown
    that could commit offsets of the broken batch."""
    code = textwrap.dedent("""
        import asyncio
        from types import SimpleNamespace
        from worker.batching import MicroBatcher
        from worker.delivery import Delivery
        from worker.runner import Runner

        class Broken:
            def forget(self): pass
            async def send(self, messages): raise TypeError("a bug in the send path")

        delivery = Delivery(Broken(), 0.01)

        async def process(messages, checked):
            return [("t", m.key, m.value) for m in messages]

        async def main():
            runner = Runner(MicroBatcher(4, 0.0), lambda k, v: v, process, delivery.deliver,
                            ack=lambda m: print("acked"), record=lambda out, t0: None)
            await runner.accept([SimpleNamespace(key=b"S", value=b"{}")])
            await asyncio.wait_for(runner.run(), 10)

        asyncio.run(main())
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_BROKEN_BATCH, r.stderr
    assert "acked" not in r.stdout and "micro-batch failed" in r.stderr and "TypeError" in r.stderr
