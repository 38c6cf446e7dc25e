"""The latest-value table and the event log."""
import asyncio

import numpy as np
import polars as pl
import pytest

import iec104
from iec104 import POINT_DTYPE, NO_TIME
from iec104._store import LatestTable
from iec104.errors import SettingsError
from iec104.store import EventLog, ParquetSink, Store

from waiting import wait_for


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


def pauses_and_resumes(log: EventLog) -> list[str]:
    """What the log asks of the sessions, in order ("pause", "resume")."""
    calls: list[str] = []
    log.on_pause.append(lambda: calls.append("pause"))
    log.on_resume.append(lambda: calls.append("resume"))
    return calls


def test_lossless_consumer_pauses_and_resumes_the_producers():
    log = EventLog(capacity=100, high_water=0.5, low_water=0.1)
    calls = pauses_and_resumes(log)
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


def test_a_ring_grown_for_a_lossless_reader_keeps_the_rows_a_lossy_reader_has_not_read():
    """When the ring grows to keep a lossless reader whole, every row still in it is kept, not
    only the held ones: a lossy reader behind the lossless one (and snapshot(), and so
    export_events()) gets the rows it had not read, never zero rows (type 0, IOA 0)."""
    log = EventLog(capacity=10)
    lossy = log.consumer()
    log.append(rows(5, start=1))                    # the lossy reader has not read these
    lossless = log.consumer(lossless=True)          # holds from row 5
    log.append(rows(12, start=100))                 # past the capacity: the ring grows
    assert log.ring.grown == 1
    got = lossy.take()
    assert (got["type_id"] != 0).all(), f"zero rows handed to a lossy reader: {got['ioa'].tolist()}"
    assert len(got) + lossy.lost == 17
    assert (log.snapshot()["type_id"] != 0).all()
    lossless.close()


def test_a_ring_grown_by_one_row_counts_what_it_never_held_as_lost():
    """A ring that grows (doubles) for a small append holds only the rows it had: the new
    positions below them are empty, and a lossy reader that far behind gets the rows held,
    the others counted in ``lost``, never the empty positions."""
    log = EventLog(capacity=10)
    lossy = log.consumer()
    log.append(rows(15, start=1))                   # the lossy reader lost 5 already
    lossless = log.consumer(lossless=True)          # holds from row 15
    log.append(rows(10, start=16))                  # the ring is full for the lossless reader
    log.append(rows(1, start=26))                   # grows 10 -> 20, holding rows 16..26
    assert log.ring.grown == 1 and log.capacity == 20
    assert lossy.take()["ioa"].tolist() == list(range(16, 27)) and lossy.lost == 15
    assert log.snapshot()["ioa"].tolist() == list(range(16, 27))
    lossless.close()


def test_a_small_event_log_resumes_reading_once_its_lossless_reader_caught_up():
    """Reading resumes at a backlog at or below the low-water mark: with a capacity under 4
    (or low_water=0) that mark is 0, and a reader that caught up (or closed) resumes it."""
    log = EventLog(capacity=3)
    calls = pauses_and_resumes(log)
    c = log.consumer(lossless=True)
    log.append(rows(2))
    assert calls == ["pause"]
    c.take()                                        # caught up: nothing is held back any more
    assert calls == ["pause", "resume"] and not log.paused


def test_equal_water_marks_do_not_pause_and_resume_at_every_row():
    """The low-water mark stays below the high one, whatever the fractions: a backlog that
    stays at the high-water mark keeps reading paused."""
    log = EventLog(capacity=10, high_water=0.5, low_water=0.5)
    calls = pauses_and_resumes(log)
    c = log.consumer(lossless=True)
    log.append(rows(6))
    c.take(1)                                       # a backlog of 5: still the high mark
    assert calls == ["pause"] and log.paused
    c.take(1)
    assert calls == ["pause", "resume"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_max_rows_below_one_is_refused_where_the_reader_is_made(bad):
    """max_rows is None or an int >= 1, checked where the reader is made: with 0 each batch
    would be empty and handed over without waiting (``async for`` spins and starves the event
    loop), with a negative value the reader's cursor would move back."""
    with pytest.raises(SettingsError, match="max_rows must be None or an int >= 1"):
        Store().events(max_rows=bad)


async def test_a_session_connected_while_reading_is_paused_does_not_read():
    """A session connected while the event log is paused for a lossless reader past its
    high-water mark starts paused too: it reads nothing (not its GI) until the reader catches
    up, and the ring does not grow by the size of the RTU's image (memory stays bounded)."""
    async with iec104.Outstation(stations=1, points=3000) as out, \
            iec104.Master(event_capacity=1000) as master:
        stream = master.events(lossless=True)       # a reader that does not read
        master.store.update(rows(800))              # past the high-water mark (750)
        assert master.store.log.paused
        log = master.store.log
        connect = asyncio.ensure_future(master.connect("127.0.0.1", out.port, t0=2))
        try:
            await asyncio.wait({connect}, timeout=1.0)
            try:
                await wait_for(lambda: log.total > 800, 1.0)
            except AssertionError:
                pass                                # nothing read: as it should be
            assert log.total == 800 and log.ring.grown == 0, \
                f"a new session read {log.total - 800} rows while paused (ring grown " \
                f"{log.ring.grown} times, capacity {log.capacity})"
        finally:
            connect.cancel()
            await asyncio.gather(connect, return_exceptions=True)
            stream.close()


# ---- the Parquet sink: failed writes, closing, names ------------------------------------------

def written(sink):
    return sorted(i for f in sink.files if f.exists() for i in pl.read_parquet(f)["ioa"].to_list())


def failing_writer(monkeypatch, failures):
    """DataFrame.write_parquet raising OSError (a full disk) while ``failures[0]`` is true."""
    orig = pl.DataFrame.write_parquet

    def write(self, *a, **k):
        if failures[0]:
            raise OSError(28, "No space left on device")
        return orig(self, *a, **k)
    monkeypatch.setattr(pl.DataFrame, "write_parquet", write)


async def test_a_failed_parquet_write_keeps_its_rows_for_the_next(tmp_path, monkeypatch):
    """A write that fails (disk full) keeps its rows, leaves no temporary file, and the rows
    are written once the disk has room: the sink is lossless."""
    failures = [True]
    failing_writer(monkeypatch, failures)
    s = Store(event_capacity=1000)
    sink = s.add_sink(ParquetSink(tmp_path, rotate_rows=10, rotate_seconds=None,
                                  flush_interval=0.01))
    s.update(rows(10, start=0))
    await wait_for(lambda: sink.failures, 1)
    assert not list(tmp_path.iterdir())         # nor a temporary file
    failures[0] = False                         # space again
    s.update(rows(20, start=10))
    await asyncio.sleep(0.05)
    s.close()
    assert written(sink) == list(range(30))
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*"))


async def test_a_parquet_sink_whose_directory_was_removed_makes_it_again(tmp_path):
    import shutil
    s = Store()
    sink = s.add_sink(ParquetSink(tmp_path / "ev", flush_interval=60))
    s.update(rows(5))
    shutil.rmtree(tmp_path / "ev")
    s.close()
    assert written(sink) == [1, 2, 3, 4, 5]


async def test_a_parquet_sink_retries_failed_writes_and_says_so_once(tmp_path, monkeypatch,
                                                                      caplog):
    """After a write error the sink goes on (retrying, backing off): its rows are written
    once the disk has room, and the sessions paused meanwhile resume. The error is on the
    sink (``error``, ``failures``) while it lasts and logged once, not at every retry."""
    failures = [True]
    failing_writer(monkeypatch, failures)
    s = Store(event_capacity=100)
    sink = s.add_sink(ParquetSink(tmp_path, rotate_rows=10, rotate_seconds=None,
                                  flush_interval=0.01))
    try:
        s.update(rows(10, start=0))
        await wait_for(lambda: sink.failures >= 3, 2)
        assert isinstance(sink.error, OSError) and not sink._task.done()
        failures[0] = False
        for i in range(1, 9):
            s.update(rows(10, start=i * 10))
            await asyncio.sleep(0.02)
        await wait_for(lambda: sink.rows_written >= 80 and not s.log.paused, 2)
        assert sink.error is None
        errors = [r for r in caplog.records if r.name == "iec104.store" and r.levelname == "ERROR"]
        assert len(errors) == 1 and "No space left" in errors[0].getMessage()
    finally:
        s.close()
    assert written(sink) == list(range(90))


async def test_a_failed_write_takes_no_more_rows_from_the_log(tmp_path, monkeypatch):
    """While its writes fail, the sink leaves the rows in the event log, whose lossless hold
    pauses the sessions: its memory stays bounded by the log's."""
    failing_writer(monkeypatch, [True])
    s = Store(event_capacity=100)
    sink = s.add_sink(ParquetSink(tmp_path, rotate_rows=10, rotate_seconds=None,
                                  flush_interval=0.01))
    s.update(rows(10, start=0))
    await wait_for(lambda: sink.failures, 1)
    for i in range(1, 9):
        s.update(rows(10, start=i * 10))
    await wait_for(lambda: sink.failures >= 3, 2)
    assert sink._consumer.backlog == 80 and s.log.paused
    with pytest.raises(OSError):
        s.close()


async def test_a_failing_sink_keeps_no_other_from_writing_and_its_error_is_raised(tmp_path):
    """Store.close() closes every sink, then raises the first one's error: another sink's
    rows are written all the same, and no reader holds the event log any more."""
    s = Store()
    gone, kept = tmp_path / "gone", tmp_path / "kept"
    s.add_sink(ParquetSink(gone, flush_interval=60))
    second = s.add_sink(ParquetSink(kept, flush_interval=60))
    s.update(rows(5))
    await asyncio.sleep(0.05)
    gone.rmdir()
    gone.write_text("")                         # no directory can be made there
    with pytest.raises(OSError):
        s.close()
    assert written(second) == [1, 2, 3, 4, 5] and not s.log.consumers


async def test_two_sinks_on_one_directory_write_files_of_their_own(tmp_path, monkeypatch):
    """Two sinks on one directory (two masters, or a poll restarted within the second) make
    names of their own: neither file replaces the other."""
    monkeypatch.setattr("iec104.export.time.strftime", lambda fmt: "20261204T000000")
    a, b = Store(), Store()
    sa = a.add_sink(ParquetSink(tmp_path, flush_interval=60))
    sb = b.add_sink(ParquetSink(tmp_path, flush_interval=60))
    a.update(rows(5, start=1))
    b.update(rows(5, start=100))
    a.close()
    b.close()
    on_disk = sorted(i for f in tmp_path.glob("*.parquet") for i in pl.read_parquet(f)["ioa"])
    assert on_disk == [1, 2, 3, 4, 5, 100, 101, 102, 103, 104], f"{sa.files} {sb.files}"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", None])
def test_rotate_rows_below_one_is_refused_where_the_sink_is_made(tmp_path, bad):
    with pytest.raises(SettingsError, match="rotate_rows must be an int >= 1"):
        ParquetSink(tmp_path, rotate_rows=bad)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "1", True])
def test_a_flush_interval_that_is_no_positive_time_is_refused(tmp_path, bad):
    with pytest.raises(SettingsError, match="flush_interval"):     # 0: a sink that spins
        ParquetSink(tmp_path, flush_interval=bad)


async def test_closing_the_store_ends_its_event_readers():
    """Store.close() closes every reader of the event log: one waiting for rows ends its
    ``async for``, a lossless one no longer holds the log, and one asked for afterwards
    ends at once."""
    s = Store()
    got = []

    async def read(**options):
        async for batch in s.events(**options):
            got.append(batch)
    readers = [asyncio.create_task(read()), asyncio.create_task(read(lossless=True))]
    await asyncio.sleep(0.01)
    s.update(rows(3))
    await wait_for(lambda: len(got) == 2, 1)
    s.close()
    done, _ = await asyncio.wait(readers, timeout=1.0)
    assert len(done) == 2 and not s.log.consumers and s.log.ring.hold == -1
    await asyncio.wait_for(read(), 1)
