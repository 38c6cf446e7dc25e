"""Waiting in async tests on a condition or on the peer, bounded in time, instead of sleeping;
and a loop of its own for a test that must see it freed."""
import asyncio
import gc
import time
import weakref

import pytest

from iec104 import requests


async def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def run_and_close(coro_fn, timeout=10.0):
    """Run ``coro_fn()`` on a new loop (at most ``timeout`` s) and close it: a weak reference
    to the loop, dead once nothing keeps it (after a collection)."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(coro_fn(), timeout))
    finally:
        loop.close()
    ref = weakref.ref(loop)
    del loop
    gc.collect()
    return ref


async def round_trips(session, n=2):
    """``n`` TESTFR round trips of a session: a barrier for "nothing more was sent". The
    first con arrives after whatever the peer sent before it, so the master has acted on
    that (and written what it sends in answer) before the second act goes out; once the
    second con is back, the peer has read all of it."""
    for _ in range(n):
        await session.test()


@pytest.fixture(autouse=True)
def quick_broadcast_settle(monkeypatch):
    """For the modules that import it: a first broadcast GI ends BROADCAST_SETTLE (0.2 s)
    after the last ActTerm, for stations that would answer one after another. The simulator
    confirms every station before it terminates the first, and no scripted peer of those
    modules answers a broadcast station by station, so the settle decides nothing there:
    0.02 s, not 0.2 s per GI."""
    monkeypatch.setattr(requests, "BROADCAST_SETTLE", 0.02)
