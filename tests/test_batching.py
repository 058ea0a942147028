"""MicroBatcher: batches in arrival order, a lone item at once, partial batches after an opt-in `within`,
back-pressure at capacity."""

from __future__ import annotations

import asyncio

import pytest

from worker.batching import MicroBatcher

DEADLINE = 10.0  # seconds; a hang fails the test instead of blocking the suite


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, DEADLINE))


def test_full_batches_come_in_arrival_order_and_never_exceed_max_size():
    async def scenario():
        b = MicroBatcher(max_size=4, within=60.0, capacity=100)
        b.extend(list(range(10)))
        return [await b.take(), await b.take()], len(b)

    batches, left = run(scenario())
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert left == 2


def test_a_lone_item_is_taken_at_once_and_batches_grow_with_what_arrived_meanwhile():
    """No wait for company by default: an idle taker gets a lone item immediately; items that arrive while
    the previous batch is being processed come out together as the next batch."""

    async def scenario():
        b = MicroBatcher(max_size=100)
        taker = asyncio.ensure_future(b.take())
        b.extend(["lone"])
        t0 = asyncio.get_running_loop().time()
        first = await taker
        waited = asyncio.get_running_loop().time() - t0
        for x in range(5):  # arrive while "batch 1 is processed"
            b.extend([x])
        return first, waited, await b.take()

    first, waited, second = run(scenario())
    assert first == ["lone"] and waited < 0.005
    assert second == [0, 1, 2, 3, 4]


def test_a_partial_batch_is_released_after_within():
    async def scenario():
        b = MicroBatcher(max_size=100, within=0.01)
        b.extend(["a", "b"])
        return await b.take()

    assert run(scenario()) == ["a", "b"]


def test_take_waits_for_the_first_item():
    async def scenario():
        b = MicroBatcher(max_size=2, within=0.0)
        taker = asyncio.ensure_future(b.take())
        await asyncio.sleep(0)
        assert not taker.done()  # nothing buffered yet
        b.extend(["x"])
        return await taker

    assert run(scenario()) == ["x"]


def test_room_blocks_at_capacity_until_a_batch_is_taken():
    async def scenario():
        b = MicroBatcher(max_size=2, within=0.0, capacity=4)
        b.extend([1, 2, 3, 4])
        waiter = asyncio.ensure_future(b.room())
        for _ in range(3):
            await asyncio.sleep(0)
        blocked = not waiter.done()
        first = await b.take()
        await waiter  # a take made room
        return blocked, first

    blocked, first = run(scenario())
    assert blocked
    assert first == [1, 2]


def test_a_whole_chunk_may_overshoot_capacity_once():
    async def scenario():
        b = MicroBatcher(max_size=2, within=0.0, capacity=2)
        await b.room()
        b.extend([1, 2, 3, 4, 5])  # one fetched chunk: accepted whole
        return [await b.take() for _ in range(3)]

    assert run(scenario()) == [[1, 2], [3, 4], [5]]


def test_max_size_must_be_positive():
    with pytest.raises(ValueError):
        MicroBatcher(max_size=0, within=0.1)


def test_a_huge_fetched_chunk_is_fed_in_pieces_and_the_buffer_stays_bounded():
    """One fetch from many partitions can hand over tens of thousands of records at once; feed appends them
    a batch at a time behind the capacity, so the buffer stays below capacity + max_size (issue 14, defect 5),
    and every record arrives once, in order, prepared just before it is appended."""

    async def scenario():
        b = MicroBatcher(max_size=8, within=0.0, capacity=16)
        prepared, seen, peak = [], [], 0

        def prepare(piece):
            prepared.extend(piece)
            return [x * 10 for x in piece]

        async def consume():
            nonlocal peak
            while len(seen) < 1000:
                peak = max(peak, len(b))
                seen.extend(await b.take())
                await asyncio.sleep(0)

        taker = asyncio.create_task(consume())
        await b.feed(list(range(1000)), prepare)
        await taker
        return prepared, seen, peak

    prepared, seen, peak = run(scenario())
    assert prepared == list(range(1000)) and seen == [x * 10 for x in range(1000)]
    assert 0 < peak < 16 + 8
