"""The latest-value table and the event log."""
import asyncio

import numpy as np
import polars as pl
import pytest

from iec104 import POINT_DTYPE, NO_TIME
from iec104._store import LatestTable
from iec104.errors import SettingsError
from iec104.store import EventLog, ParquetSink, Store


def rows(n=3, *, type_id=13, station=0, ca=1, start=1, value=0.0):
    p = np.zeros(n, POINT_DTYPE)
    p["type_id"], p["station"], p["ca"] = type_id, station, ca
    p["ioa"] = np.arange(start, start + n)
    p["value"] = value + np.arange(n)
    p["time"] = NO_TIME
    p["cot"] = 3
    return p


def test_time_tagged_variant_updates_the_same_row_and_other_families_do_not():
    t = LatestTable()
    assert t.update(rows(1, type_id=13, value=1.0)) == 1
    assert t.update(rows(1, type_id=36, value=2.0)) == 0        # M_ME_TF_1: same point
    assert t.update(rows(1, type_id=1, value=1.0)) == 1         # single point at that IOA
    cols = t.columns()
    assert len(t) == 2
    i = t.lookup(0, 1, 1, 13)
    assert cols["value"][i] == 2.0 and cols["type_id"][i] == 36 and cols["updates"][i] == 2
    assert t.lookup(0, 1, 1, 1) != i and t.lookup(0, 1, 1, 9) == -1


def test_keys_separate_station_and_common_address():
    t = LatestTable()
    t.update(np.concatenate([rows(5, station=0), rows(5, station=1), rows(5, station=1, ca=2)]))
    assert len(t) == 15
    assert t.count_by_station().tolist() == [5, 10]
    assert t.count_by_device() == {(0, 1): 5, (1, 1): 5, (1, 2): 5}


def test_commands_and_system_answers_do_not_enter_the_table():
    t = LatestTable()
    t.update(np.concatenate([rows(2, type_id=45), rows(2, type_id=100), rows(2, type_id=70)]))
    assert len(t) == 0


def test_growth_keeps_every_row_and_its_latest_value():
    t = LatestTable(capacity=16)
    big = rows(100_000)
    assert t.update(big) == 100_000
    again = big.copy()
    again["value"] += 1
    assert t.update(again) == 0
    cols = t.columns()
    order = np.argsort(cols["ioa"])
    np.testing.assert_array_equal(cols["value"][order], again["value"])
    assert (cols["updates"] == 2).all()


def test_last_row_of_a_batch_wins():
    t = LatestTable()
    p = rows(1).repeat(3)
    p["value"] = [1, 2, 3]
    t.update(p)
    assert t.columns()["value"].tolist() == [3.0] and t.columns()["updates"].tolist() == [3]


def test_points_frame_schema():
    s = Store()
    p = rows(2, type_id=36)
    p["time"] = [1795425432345, NO_TIME]
    p["time_flags"] = [0x02, 0]
    p["recv_ns"] = 1795425432345000000
    s.update(p)
    df = s.points()
    assert df.schema["time"] == pl.Datetime("ms", "UTC")
    assert df.schema["recv_time"] == pl.Datetime("ns", "UTC")
    assert df["time"].null_count() == 1 and df["summer_time"].to_list() == [True, False]
    assert df["type"].to_list() == ["M_ME_TF_1", "M_ME_TF_1"] and df["family"].to_list() == [13, 13]
    assert len(s) == 2


def test_event_log_keeps_order_and_counts_overrun():
    log = EventLog(capacity=10)
    c = log.consumer()
    log.append(rows(4))
    assert c.take()["ioa"].tolist() == [1, 2, 3, 4]
    log.append(rows(15, start=100))                 # more than the ring holds
    got = c.take()
    assert got["ioa"].tolist() == list(range(105, 115))
    assert c.lost == 5
    assert log.snapshot()["ioa"].tolist() == list(range(105, 115))


def test_lossless_consumer_pauses_and_resumes_the_producers():
    log = EventLog(capacity=100, high_water=0.5, low_water=0.1)
    calls = []
    log.on_pause.append(lambda: calls.append("pause"))
    log.on_resume.append(lambda: calls.append("resume"))
    c = log.consumer(lossless=True)
    log.append(rows(40))
    log.append(rows(20))
    assert calls == ["pause"] and log.paused
    c.take()
    assert calls == ["pause", "resume"]


async def test_async_batches_deliver_everything_once():
    s = Store(event_capacity=1000)
    got = []

    async def consume():
        async for batch in s.events(idle=0.2):
            got.append(batch)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    for i in range(5):
        s.update(rows(10, start=i * 10))
        await asyncio.sleep(0)
    await task
    allrows = np.concatenate(got)
    assert allrows["ioa"].tolist() == list(range(50))


async def test_async_batches_as_polars():
    s = Store()

    async def first():
        async for df in s.events(as_polars=True):
            return df

    task = asyncio.create_task(first())
    await asyncio.sleep(0.01)
    s.update(rows(3))
    df = await asyncio.wait_for(task, 2)
    assert isinstance(df, pl.DataFrame) and df["ioa"].to_list() == [1, 2, 3]


async def test_parquet_sink_rotates_complete_files(tmp_path):
    s = Store()
    sink = s.add_sink(ParquetSink(tmp_path, rotate_rows=25, rotate_seconds=None, flush_interval=0.01))
    for i in range(6):
        s.update(rows(10, start=i * 10))
        await asyncio.sleep(0.02)
    s.close()
    files = sorted(tmp_path.glob("*.parquet"))
    assert len(files) == 3 and not list(tmp_path.glob("*.tmp"))
    df = pl.concat([pl.read_parquet(f) for f in files])
    assert df["ioa"].to_list() == list(range(60)) and sink.rows_written == 60
    assert [len(pl.read_parquet(f)) for f in files] == [25, 25, 10]


async def test_a_reader_wakes_once_per_linger_not_once_per_read():
    """Rows arriving within ``linger`` of the first come as one batch (one wake-up for many
    RTUs' reads); with linger=0 the reader wakes for the first read alone."""
    async def first_batch(linger):
        s = Store()
        stream = s.events(linger=linger)
        task = asyncio.create_task(stream.__anext__())
        await asyncio.sleep(0.01)
        for i in range(3):
            s.update(rows(1, start=i))
            await asyncio.sleep(0.005)
        return len(await asyncio.wait_for(task, 2))

    assert await first_batch(0.2) == 3
    assert await first_batch(0) == 1


async def test_waits_that_time_out_leave_no_waiter_behind():
    """A reader with a timeout and no data (the Parquet sink on an idle link) must not grow
    the log's waiters for ever."""
    s = Store()
    for _ in range(50):
        await s.log.wait(0.001)
    assert s.log.ring.waiters == 0
    task = asyncio.create_task(s.log.wait())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert s.log.ring.waiters == 0


async def test_a_reader_cancelled_as_rows_arrive_is_cancelled():
    """Python 3.11's asyncio.wait_for returns the result and drops a cancel that comes with
    it; a reader task (or the cluster's heartbeat) then never ends."""
    log = EventLog(100)
    for timeout in (5, None):
        waiting = asyncio.create_task(log.wait(timeout=timeout))
        await asyncio.sleep(0)                  # it waits
        log.append(np.zeros(1, POINT_DTYPE))    # its future resolves ...
        waiting.cancel()                        # ... and the task is cancelled, together
        try:
            await waiting
        except asyncio.CancelledError:
            pass
        assert waiting.cancelled()


async def test_a_lingering_reader_gets_its_batch_from_the_next_rows_or_at_most_twice_later():
    # with many RTUs each batch's own linger timer was a wake-up of the loop per batch (at
    # 1,000 APDUs/s from 100 RTUs, 40% of the master's CPU): the first rows after the linger
    # hand the batch over; only when no rows follow does a timer, at twice the linger
    loop = asyncio.get_running_loop()
    log = EventLog(1000)
    rows = np.zeros(2, POINT_DTYPE)
    woke = []

    async def reader(linger):
        await log.wait(linger=linger)
        woke.append(loop.time())
    task = asyncio.create_task(reader(0.4))
    await asyncio.sleep(0)
    log.append(rows)
    await asyncio.sleep(0.45)            # the linger has passed, no rows since: still waiting
    assert woke == []
    log.append(rows)                     # the next rows: handed over at once
    await asyncio.wait_for(task, 0.1)
    # a shorter linger here: only the timer's lower bound is timed (late is fine)
    task = asyncio.create_task(reader(0.2))
    await asyncio.sleep(0)
    t0 = loop.time()
    log.append(rows)                     # and nothing after: the timer, at 2 x linger
    await asyncio.wait_for(task, 5)
    assert 0.35 <= woke[-1] - t0 < 3     # (a loop may fire a timer a little early)


async def test_a_reader_without_linger_is_woken_at_once_beside_a_lingering_one():
    log = EventLog(1000)
    rows = np.zeros(1, POINT_DTYPE)
    slow = asyncio.create_task(log.wait(linger=5))
    await asyncio.sleep(0)
    log.append(rows)                     # the slow reader lingers: wake_at is 5 s away
    fast = asyncio.create_task(log.wait())
    await asyncio.sleep(0)
    log.append(rows)
    await asyncio.wait_for(fast, 1)      # not held back to the other's wake time
    assert not slow.done()
    slow.cancel()


@pytest.mark.parametrize("bad", [-0.001, float("nan"), float("inf"), 61, "5", None, True])
def test_a_reader_linger_out_of_range_is_one_clear_error_when_asked(bad):
    # checked where the reader is made: the link core reads it as a C double when rows come
    # (a string failed there, at the first iteration; inf or nan waited for ever or not at all)
    with pytest.raises(SettingsError, match="linger must be 0..60 s"):
        Store().events(linger=bad)
