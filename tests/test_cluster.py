"""iec104.cluster on a local Ray instance: a fleet of simulators over 2 workers.

Ray starts once for the module (2 CPUs, no dashboard, 127.0.0.1); the tests share one
Cluster and run in order on one event loop (uvloop), the worker kill last. Without Ray
installed they skip, and the suite does not pay for Ray's start-up.
"""
import asyncio
import contextlib
import logging
import threading
import time

import polars as pl
import pytest
import pytest_asyncio

import iec104
from iec104.errors import (CommandInDoubt, ConfirmationTimeout, ConnectionLostError,
                           NotConnected, UnknownIOAError)
from scripted_peer import ScriptedPeer, s_frame
from waiting import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module", loop_factories=["uvloop"])

SIZES = [30, 40, 50, 60]                        # points of each simulated RTU (one station each)


def in_gi(out) -> int:
    """What a GI of the simulator returns: everything but its integrated totals."""
    return int((out.image["type_id"] != iec104.TypeID.M_IT_NA_1).sum())


async def wait_async(check, timeout):
    """Until the coroutine function ``check`` returns true (bounded)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet():
    ray = pytest.importorskip("ray")
    from iec104.cluster import Cluster
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")
    outs = [await iec104.Outstation(stations=1, points=n).start() for n in SIZES]
    # an RTU that never confirms a command: one in flight when its worker is killed
    async with ScriptedPeer() as silent:
        try:
            # half a CPU each: one of the two left for the CLI's worker (the poll test)
            async with Cluster(workers=2, heartbeat=0.3, cpus_per_worker=0.5) as cluster:
                for i, out in enumerate(outs):
                    await cluster.connect("127.0.0.1", out.port, name=f"rtu-{i}",
                                          load=2.0 if i == 0 else 1.0)
                await cluster.connect("127.0.0.1", silent.port, name="silent", load=0.5)
                yield cluster, outs, silent
        finally:
            for out in outs:
                await out.close()
            if started:     # Ray's stop (1.4 s, its processes' exit) beside the worker's next tests
                threading.Thread(target=ray.shutdown, name="ray-shutdown").start()


async def test_rtus_are_placed_by_load_then_count(fleet):
    cluster, _, _ = fleet
    placed = cluster.placement()
    assert placed["name"].to_list() == ["rtu-0", "rtu-1", "rtu-2", "rtu-3", "silent"]
    assert placed["station"].to_list() == [0, 1, 2, 3, 4]
    # the least expected load first (rtu-0 weighs 2), then the fewest RTUs (rtu-3)
    assert placed["worker"].to_list() == [0, 1, 1, 0, 1]
    assert {s["name"]: s["worker"] for s in cluster.status()} == dict(
        zip(placed["name"], placed["worker"]))


async def test_gi_of_all_gives_one_table_with_every_point(fleet):
    cluster, outs, _ = fleet
    sizes = [in_gi(o) for o in outs]
    counts = await cluster.interrogate()
    assert counts == {**{f"rtu-{i}": n for i, n in enumerate(sizes)}, "silent": 0}
    df = await cluster.points()
    assert len(df) == sum(sizes)
    assert df.columns[:4] == ["station", "session", "worker", "ca"]
    by = df.group_by("station", "session", "worker").len().sort("station")
    assert by.rows() == [(i, f"rtu-{i}", w, n) for i, w, n in zip(range(4), [0, 1, 1, 0], sizes)]
    for i, out in enumerate(outs):                      # every point, with its value
        got = df.filter(pl.col("station") == i).sort("ioa")
        sent = out.image[out.image["type_id"] != iec104.TypeID.M_IT_NA_1]
        assert got["ioa"].to_list() == sorted(sent["ioa"].tolist())
        assert got["value"].to_list() == sent[sent["ioa"].argsort()]["value"].tolist()
    await wait_for(lambda: len(cluster) == sum(sizes), 5)   # the heartbeat's count


async def test_a_point_list_imported_once_is_joined_on_every_worker(fleet):
    cluster, outs, _ = fleet
    listed = pl.DataFrame({"ioa": ["1", "2"], "name": ["breaker", "isolator"],
                           "unit": ["", "A"]})
    cluster.import_points(listed)                       # for every station
    cluster.import_points(pl.DataFrame({"ioa": ["1"], "name": ["rtu-3 breaker"]}),
                          station="rtu-3")
    df = await cluster.parameters()
    # as in a Master: "silent", connected but sending nothing, shows its listed points missing
    assert len(df) == sum(map(in_gi, outs)) + 2
    assert df.filter(pl.col("session") == "silent")["status"].to_list() == ["missing"] * 2
    named = df.filter(pl.col("ioa") == 1).select("session", "name", "status").rows()
    assert named == [("rtu-0", "breaker", "ok"), ("rtu-1", "breaker", "ok"),
                     ("rtu-2", "breaker", "ok"), ("rtu-3", "rtu-3 breaker", "ok"),
                     ("silent", "breaker", "missing")]
    assert df.filter(pl.col("ioa") == 3)["status"].unique().to_list() == ["unknown"]


async def test_a_command_goes_to_the_worker_of_its_rtu(fleet):
    cluster, outs, _ = fleet
    ioa = int(outs[1].image["ioa"][outs[1].image["type_id"] == 1][0])    # a single point
    result = await cluster.command("rtu-1", 1, ioa, "C_SC_NA_1", 1, select=True)
    assert (result.type_id, result.ca, result.ioa, result.value) == (45, 1, ioa, 1.0)
    assert [(c["select"], c["result"]) for c in outs[1].commands] == [
        (True, "selected"), (False, "executed")]
    assert not any(o.commands for o in (outs[0], outs[2], outs[3]))
    with pytest.raises(UnknownIOAError) as e:           # the library's typed error, intact
        await cluster.command("rtu-1", 1, 99_999, "C_SC_NA_1", 1)
    assert (e.value.ioa, e.value.cot) == (99_999, 47)
    assert await cluster.clear_doubt("rtu-1", ca=1) == []      # answered, refused: no doubt


async def test_export_writes_one_dataset_read_as_one_table(fleet, tmp_path):
    cluster, _, _ = fleet
    path = await cluster.export(tmp_path / "fleet")
    assert sorted(p.name for p in path.iterdir()) == ["worker=0", "worker=1"]
    back = pl.read_parquet(path, hive_partitioning=True)
    expected = await cluster.parameters()
    assert len(back) == len(expected)
    assert back.sort("station", "ioa")["session"].to_list() == expected["session"].to_list()
    by_station = await cluster.export(tmp_path / "fleet", by="station")   # replaced in place
    assert sorted(p.name for p in by_station.iterdir()) == [f"station={i}" for i in range(5)]


async def test_events_stream_batches_from_every_worker(fleet):
    cluster, _, _ = fleet
    seen: set = set()
    stream = cluster.events(wait=0.2)

    async def read():
        async for batch in stream:
            seen.update(batch.select("worker", "session").unique().rows())
            if {w for w, _ in seen} == {0, 1}:
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.5)                            # the readers are open on both workers
    await cluster.interrogate("rtu-0", "rtu-1")
    await asyncio.wait_for(reader, 10)
    await stream.aclose()
    assert {(0, "rtu-0"), (1, "rtu-1")} <= seen


async def test_a_fleet_sink_that_cannot_write_keeps_its_rows_and_writes_them_later(
        fleet, tmp_path, monkeypatch):
    """A full disk: the fleet's sink keeps its rows, says so once, tries again with back-off
    and writes them all once it can (its task used to end at the first error, and the
    lossless stream then held every RTU for good)."""
    from iec104 import export
    cluster, _, _ = fleet
    real, fails = export.write_table, [3]

    def full_disk(df, path):
        if fails[0]:
            fails[0] -= 1
            raise OSError(28, "No space left on device")
        return real(df, path)
    monkeypatch.setattr(export, "write_table", full_disk)
    sink = cluster.sink(tmp_path / "sink", rotate_seconds=0.05)
    await asyncio.sleep(0.5)                            # the readers are open on both workers
    await cluster.interrogate("rtu-0")
    await wait_for(lambda: fails[0] == 0 and sink.error is None and sink.rows_written, 10)
    sink.close()
    assert sink.failures == 3
    written = sum(len(pl.read_parquet(f)) for f in sink.files)
    assert written == sink.rows_written > 0


async def test_poll_with_workers_writes_what_poll_without_writes(fleet, tmp_path, capsys):
    from iec104 import cli
    _, outs, _ = fleet
    rtus = tmp_path / "rtus.toml"
    rtus.write_text("".join(f'[[rtu]]\nhost = "127.0.0.1"\nport = {o.port}\nname = "rtu-{i}"\n'
                            for i, o in enumerate(outs)))
    lines, tables = [], []
    # on this loop and this Ray (the CPU the fleet leaves free): the poll's own coroutine
    for extra in ([], ["--workers", "1"]):
        out = tmp_path / f"p{len(extra)}.parquet"
        args = cli._parser().parse_args(["poll", str(rtus), "--duration", "0.5",
                                         "--export", str(out), *extra])
        assert await asyncio.wait_for(cli._poll(args, cli._targets(args.targets), None), 60) == 0
        lines.append([ln for ln in capsys.readouterr().out.splitlines() if "wrote" in ln])
        tables.append(pl.read_parquet(out).drop("age", "recv_time"))
    assert lines[0] == [ln.replace("p2.", "p0.") for ln in lines[1]]
    assert lines[0][0].startswith(f"wrote {sum(map(in_gi, outs))} parameters")
    assert tables[0].equals(tables[1])


async def test_a_worker_that_answers_late_once_is_up_again(fleet, monkeypatch, caplog):
    # a heartbeat past its timeout (a loaded machine, a pause of the worker's node) marks the
    # worker down; when the same incarnation answers again it is up, with nothing restarted
    cluster, outs, _ = fleet
    real, late = cluster._call, []

    async def call(worker, method, *args, **kw):
        if worker == 0 and method == "hello" and not late:
            late.append(time.monotonic())
            raise TimeoutError                      # what asyncio.timeout raises in _watch
        return await real(worker, method, *args, **kw)
    monkeypatch.setattr(cluster, "_call", call)
    await wait_for(lambda: late and 0 in cluster._down, 5)
    assert {s["tcp_state"] for s in cluster.status() if s["worker"] == 0} == {"down"}
    await wait_for(lambda: 0 not in cluster._down, 5)
    assert all(s["tcp_state"] == "connected" for s in cluster.status())
    assert len(cluster.outages()) == 0                  # its RTUs never went down
    assert "worker 0 answered again" in caplog.text
    ioa = int(outs[0].image["ioa"][outs[0].image["type_id"] == 1][0])
    result = await cluster.command("rtu-0", 1, ioa, "C_SC_NA_1", 0)
    assert result.ioa == ioa


async def test_a_heartbeat_that_fails_does_not_end_the_watch_of_its_worker(fleet, monkeypatch,
                                                                          caplog):
    # an error of any other kind from one hello (a bug in a status, a Ray error of another
    # kind) is logged; the watch goes on, or a restart of that worker would never be seen
    cluster, _, _ = fleet
    real, calls = cluster._call, []

    async def call(worker, method, *args, **kw):
        if worker == 1 and method == "hello":
            calls.append(time.monotonic())
            if len(calls) <= 3:                     # the same error thrice: said once
                raise RuntimeError("status of a session failed")
        return await real(worker, method, *args, **kw)
    monkeypatch.setattr(cluster, "_call", call)
    caplog.set_level(logging.INFO, "iec104.cluster")
    await wait_for(lambda: len(calls) >= 5, 5)
    assert caplog.text.count("worker 1: heartbeat failed: RuntimeError: status of a session") == 1
    assert "worker 1: heartbeat works again" in caplog.text
    assert all(not t.done() for t in cluster._tasks[:2])


async def test_a_killed_worker_is_restarted_and_its_rtus_come_back(fleet):
    import ray
    cluster, outs, silent = fleet
    victim = cluster.rtus["silent"].worker
    mine = sorted(r.name for r in cluster.sessions if r.worker == victim)
    # one RTU of that worker is unreachable when the worker comes back: the others must not
    # wait for it (shown down, commands refused, the worker's status frozen)
    gone = next(n for n in mine if n.startswith("rtu-"))
    i = int(gone.split("-")[1])
    port = outs[i].port
    before = await cluster.points()
    # in doubt on that worker: one command timed out, one is in flight when it dies
    with pytest.raises(ConfirmationTimeout):
        await cluster.command("silent", 1, 5002, "C_SC_NA_1", 1, timeout=0.3)
    in_flight = asyncio.create_task(cluster.command("silent", 1, 5001, "C_SC_NA_1", 1))
    await wait_for(lambda: len(silent.received(type_id=45)) == 2, 5)
    await outs[i].close()
    ray.kill(cluster.actors[victim], no_restart=False)
    with pytest.raises(ConnectionLostError, match="not re-sent"):
        await asyncio.wait_for(in_flight, 30)
    # down, then back: reconnected, interrogated again, the outage said
    await wait_for(lambda: cluster.status()[-1]["tcp_state"] == "down", 10)
    # both still in doubt, whether the RTU is back on the new worker yet or not (the same
    # command used to go out again, blindly)
    for ioa in (5001, 5002):
        with pytest.raises(CommandInDoubt, match=f"clear_doubt.*ioa={ioa}"):
            await cluster.command("silent", 1, ioa, "C_SC_NA_1", 1, timeout=1)
    assert {s["name"] for s in cluster.status() if s["tcp_state"] == "down"} == set(mine)
    assert sorted(cluster.outages().filter(pl.col("up").is_null())["name"]) == mine
    back = [n for n in mine if n != gone]
    await wait_for(lambda: sorted(cluster.outages().filter(pl.col("up").is_not_null())["name"])
                   == back, 60)
    await wait_for(lambda: all(s["tcp_state"] == "connected" for s in cluster.status()
                               if s["name"] != gone), 30)
    assert cluster.outages().filter(pl.col("up").is_null())["name"].to_list() == [gone]
    down = next(s for s in cluster.status() if s["name"] == gone)
    assert down["tcp_state"] == "down" and "not back" in down["last_error"]
    with pytest.raises(NotConnected, match=gone):
        await cluster.command(gone, 1, 1, "C_SC_NA_1", 1)
    # the RTU answers again (same port): it comes back on its own
    outs[i] = await iec104.Outstation(stations=1, points=SIZES[i], port=port).start()
    await wait_for(lambda: cluster.outages()["up"].is_not_null().sum() == len(mine), 60)
    out = cluster.outages()
    assert sorted(out["name"]) == mine and out["worker"].unique().to_list() == [victim]
    assert out["seconds"].is_not_null().all() and (out["seconds"] > 0).all()
    await wait_for(lambda: all(s["tcp_state"] == "connected" for s in cluster.status()), 30)

    async def whole():
        return len(await cluster.points()) == len(before)
    await wait_async(whole, 30)
    for ioa in (5001, 5002):                            # back: its new session refuses them
        with pytest.raises(CommandInDoubt, match=f"connection was lost.*ioa={ioa}"):
            await cluster.command("silent", 1, ioa, "C_SC_NA_1", 1, timeout=1)
    # the RTU looked at: accepted again, and sent
    assert await cluster.clear_doubt("silent", ca=1, ioa=5002) == [
        "C_SC_NA_1 execute CA 1 IOA 5002"]
    accepted = asyncio.create_task(cluster.command("silent", 1, 5002, "C_SC_NA_1", 1,
                                                   timeout=10))
    await wait_for(lambda: silent.received(type_id=45), 5)
    con = bytearray(silent.received(type_id=45)[0][1][6:])
    con[2] = 7                                          # its ActCon
    silent.send_i(bytes(con))
    assert (await asyncio.wait_for(accepted, 10)).ioa == 5002
    sent = [int.from_bytes(raw[12:15], "little")            # each command's IOA
            for c in silent.connections for _, raw in silent.received(c, type_id=45)]
    assert sent == [5002, 5001, 5002]                   # 5001 never re-sent on the new worker
    assert len(silent.connections) == 2


async def test_a_command_whose_driver_call_is_cancelled_never_leaves_later(fleet):
    """Cancelling Cluster.command cancels the worker's command too (rule 10): one waiting in
    the send queue (the k window full) is withdrawn and never leaves when the window opens;
    before, the worker's task ran on and sent it."""
    cluster, _, _ = fleet
    async with ScriptedPeer() as stuck:             # it acknowledges none of our I-frames
        await cluster.connect("127.0.0.1", stuck.port, name="stuck", k=2, w=1, t1=30)
        sent = [asyncio.create_task(cluster.command("stuck", 1, ioa, "C_SC_NA_1", 1,
                                                    timeout=20)) for ioa in (7001, 7002)]
        await wait_for(lambda: len(stuck.received(type_id=45)) == 2, 5)
        queued = asyncio.create_task(cluster.command("stuck", 1, 7003, "C_SC_NA_1", 1,
                                                     timeout=20))
        await asyncio.sleep(0.5)                    # on the worker, behind the full window
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        await asyncio.sleep(0.5)                    # the cancel reaches the worker
        stuck.send(s_frame(2))                      # the window opens
        for _, raw in stuck.received(type_id=45):
            con = bytearray(raw[6:])
            con[2] = 7                              # their ActCons
            stuck.send_i(bytes(con))
        await asyncio.gather(*sent)
        await asyncio.sleep(0.5)
        ioas = [int.from_bytes(raw[12:15], "little") for _, raw in stuck.received(type_id=45)]
        assert ioas == [7001, 7002], f"sent after its caller gave up: {ioas}"


async def test_what_is_in_doubt_pickles_into_a_new_session_as_lost():
    # no Ray: a worker's records (one command timed out, one awaiting its answer) cross a
    # process as plain values and refuse both objects in a new session until clear_doubt
    import pickle
    from iec104.requests import Requests
    old, new = Requests("rtu", 0xFFFF), Requests("rtu", 0xFFFF)
    timed_out = old.begin((45, 1, 7), "C_SC_NA_1 execute CA 1 IOA 7", False, (1.0, 0))
    old.end((45, 1, 7), timed_out, gave_up=True, sent=True, what="C_SC_NA_1 execute CA 1 IOA 7")
    old.begin((46, 1, 8), "C_DC_NA_1 execute CA 1 IOA 8", True)
    old.begin((103, 1, 0), "clock sync", False)             # harmless twice: not carried
    new.restore_doubt(pickle.loads(pickle.dumps(old.doubt_records())))
    assert {o: (d.what, d.lost) for o, d in new.in_doubt.items()} == {
        (0, 1, 7): ("C_SC_NA_1 execute CA 1 IOA 7", True),
        (0, 1, 8): ("C_DC_NA_1 execute CA 1 IOA 8", True)}
    with pytest.raises(CommandInDoubt, match="connection was lost.*ioa=7"):
        new.begin((58, 1, 7), "C_SC_TA_1 execute CA 1 IOA 7", False)    # the same object
    assert new.clear_doubt(1, 7) == ["C_SC_NA_1 execute CA 1 IOA 7"]
    new.begin((45, 1, 7), "C_SC_NA_1 execute CA 1 IOA 7", False)


async def test_master_tables_carry_the_rtu_name(tmp_path):
    # no Ray: Master.points(), parameters() and the exports name the session by its station
    async with iec104.Outstation(stations=1, points=5) as out, iec104.Master() as master:
        rtu = await master.connect("127.0.0.1", out.port, name="north")
        await rtu.interrogate()
        for df in (master.points(), master.parameters(),
                   pl.read_parquet(master.export(tmp_path / "p.parquet")),
                   pl.read_parquet(master.export_events(tmp_path / "e.parquet"))):
            assert df.columns[:2] == ["station", "session"]
            assert df["session"].unique().to_list() == ["north"]


class InProcess:
    """A Cluster whose workers run in this process, called as it calls its Ray actors (no
    Ray): a worker in ``dead`` fails as a dead actor does; ``restart`` gives a new one."""

    def __init__(self, workers=1):
        pytest.importorskip("ray")
        from iec104.cluster import Cluster
        from iec104.cluster_worker import Raised, Worker
        self.Raised, self.Worker = Raised, Worker
        self.cluster = c = Cluster(workers=workers, heartbeat=0.1)
        self.workers = [Worker(i, {}, 10_000) for i in range(workers)]
        self.dead = set()
        c.actors = list(self.workers)                   # (what placement counts)
        c._incarnation = {i: w.incarnation for i, w in enumerate(self.workers)}
        c._call = self.call

    async def call(self, worker, method, *args, what=None):
        if worker in self.dead:
            self.cluster._down.setdefault(worker, time.time())
            raise ConnectionLostError(f"{what or method}: worker {worker} died; not re-sent")
        out = await getattr(self.workers[worker], method)(*args)
        if isinstance(out, self.Raised):
            raise out.error()
        return out

    async def restart(self, i):
        old, self.workers[i] = self.workers[i], self.Worker(i, {}, 10_000)
        await old.close()
        self.dead.discard(i)

    async def restored(self, i):
        """One heartbeat that sees the restart of worker ``i``, and its RTUs' tries, ended."""
        await self.cluster._beat(i)
        tasks = self.cluster._restoring.get(i, [])
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)

    async def close(self):
        for ts in self.cluster._restoring.values():
            for t in ts:
                t.cancel()
        for w in self.workers:
            await w.close()


@contextlib.asynccontextmanager
async def silent_fleet(workers=1, **settings):
    """An InProcess cluster with "silent" (an RTU that confirms no command) on its last
    worker: (it, its cluster, the RTU)."""
    async with ScriptedPeer() as silent:
        f = InProcess(workers)
        try:
            await f.cluster.connect("127.0.0.1", silent.port, name="silent",
                                    worker=workers - 1, **settings)
            yield f, f.cluster, silent
        finally:
            await f.close()


async def test_a_heartbeat_carries_only_rtus_with_something_in_doubt():
    # thousands of RTUs, few in doubt: an RTU with none adds nothing to each heartbeat
    # (it used to send one empty list per RTU)
    async with silent_fleet() as (f, c, _):
        assert (await f.workers[0].hello())["doubts"] == {}
        assert c._doubts == {}


async def test_a_dead_workers_rtu_shows_what_the_driver_holds_in_doubt():
    # its status is the last heartbeat's; in_doubt there counted the session's own doubts
    # only, not the command awaiting its answer when the worker died (it used to say 1)
    async with silent_fleet() as (f, c, silent):
        with pytest.raises(ConfirmationTimeout):
            await c.command("silent", 1, 5002, "C_SC_NA_1", 1, timeout=0.2)
        in_flight = asyncio.create_task(c.command("silent", 1, 5001, "C_SC_NA_1", 1))
        await wait_for(lambda: len(silent.received(type_id=45)) == 2, 5)
        # a second command to that object through the driver at once: the worker refuses it
        with pytest.raises(CommandInDoubt, match="already awaits"):
            await c.command("silent", 1, 5001, "C_SC_NA_1", 0)
        await c._beat(0)
        assert set(c._doubts["silent"]) == {(0, 1, 5001), (0, 1, 5002)}
        assert c.status()[0]["in_doubt"] == 1                 # the live session's count
        f.dead.add(0)
        c._down[0] = time.time()
        assert c.status()[0]["tcp_state"] == "down"
        assert c.status()[0]["in_doubt"] == 2                 # the driver's: both
        in_flight.cancel()


async def test_a_session_the_driver_did_not_place_never_speaks_for_an_rtu_of_its_name():
    # a session "silent" on worker 0 that the driver does not know (a connect whose caller
    # gave up), and the fleet's on worker 1 with a command in doubt: worker 0's heartbeat
    # used to replace its status and erase what it had in doubt (a restart of worker 1 then
    # sent the command again)
    async with silent_fleet(workers=2) as (f, c, silent), \
            iec104.Outstation(stations=1, points=5) as out:
        await f.workers[0].connect(99, "127.0.0.1", out.port, "silent", {})
        with pytest.raises(ConfirmationTimeout):
            await c.command("silent", 1, 5001, "C_SC_NA_1", 1, timeout=0.2)
        await c._beat(1)
        await c._beat(0)
        assert set(c._doubts["silent"]) == {(0, 1, 5001)}
        assert c.status()[0]["port"] == silent.port


async def test_a_worker_answer_that_is_no_doubt_record_leaves_the_drivers_own():
    # a wrong worker (another version, a bug) must not end the heartbeat, nor erase a doubt
    pytest.importorskip("ray")
    from iec104.cluster import RTU, Cluster
    from iec104.settings import SessionSettings
    c = Cluster(workers=1)
    c.rtus["x"] = RTU("x", 0, 0, "127.0.0.1", 2404, 1.0, SessionSettings.of(), {})
    held = {(0, 1, 5): ((45, 1, 5, "C_SC_NA_1 command CA 1 IOA 5", False, None), 0.0)}
    c._doubts["x"] = dict(held)
    status = {"name": "x", "station": 0, "tcp_state": "connected"}
    for bad in ([("C_SC_NA_1",)], [(45, 1, 5, "w", False, "no mirror")], "junk"):
        c._seen(0, {"incarnation": "i", "rows": 0, "status": [status],
                    "doubts": {0: bad}}, time.monotonic())
        assert c._doubts["x"] == held
    # a station not placed on that worker adds nothing
    c._seen(0, {"incarnation": "i", "rows": 0, "status": [{**status, "station": 7}],
                "doubts": {7: [(45, 1, 6, "w", False, None)]}}, time.monotonic())
    assert c._doubts == {"x": held}
    c._note("x", 1, 9, None)                # no command type: noted nowhere, raises nothing
    assert c._doubts == {"x": held}


def patch_connect(f, i, before):
    """Worker ``i``'s connect awaits ``before()`` first."""
    real = f.workers[i].connect

    async def connect(*args):
        await before()
        return await real(*args)
    f.workers[i].connect = connect


async def doubt_then_restart(f, c):
    """IOA 5002 of "silent" in doubt (a timeout), seen by a heartbeat; then worker 0 dies and
    is restarted (not yet seen by one)."""
    with pytest.raises(ConfirmationTimeout):
        await c.command("silent", 1, 5002, "C_SC_NA_1", 1, timeout=0.2)
    await c._beat(0)
    f.dead.add(0)
    await f.restart(0)


async def test_a_clear_while_the_rtu_reconnects_is_not_undone_by_its_restore():
    # the restarted worker's connect took the records before clear_doubt; its session used
    # to hold the cleared command in doubt again (and the heartbeat brought it back here)
    async with silent_fleet(backoff_min=0.05) as (f, c, _):
        await doubt_then_restart(f, c)
        gate = asyncio.Event()
        patch_connect(f, 0, gate.wait)
        await c._beat(0)                                    # the restart seen, tries begun
        await asyncio.sleep(0.05)
        assert "silent" in c._missing
        assert await c.clear_doubt("silent", ca=1, ioa=5002) == [
            "C_SC_NA_1 execute CA 1 IOA 5002"]
        gate.set()
        await asyncio.wait_for(asyncio.gather(*c._restoring[0]), 10)
        assert "silent" not in c._missing
        await c._beat(0)
        assert (await f.workers[0].hello())["doubts"] == {}
        assert c._doubts == {} and c._cleared == {}


async def test_a_restore_that_fails_with_any_error_is_tried_again():
    # an error of a kind other than the library's (a Ray task error) ended the RTU's tries:
    # it stayed "not back" for good
    async with silent_fleet(backoff_min=0.05) as (f, c, _):
        f.dead.add(0)
        await f.restart(0)
        failed = []

        async def fail_once():
            if not failed:
                failed.append(1)
                raise RuntimeError("a bug on the worker")
        patch_connect(f, 0, fail_once)
        await f.restored(0)
        assert failed and "silent" not in c._missing


async def test_a_command_to_a_restarted_worker_not_seen_yet_is_not_connected():
    # before a heartbeat sees the restart the RTU has no session there: NotConnected (never
    # sent), not a KeyError out of the worker
    async with silent_fleet() as (f, c, _):
        await f.restart(0)
        with pytest.raises(NotConnected, match="not on worker 0.*not sent"):
            await c.command("silent", 1, 5001, "C_SC_NA_1", 1)
        with pytest.raises(NotConnected, match="not on worker 0"):
            await c.interrogate("silent")
        assert c._doubts == {}


async def test_what_is_in_doubt_survives_a_worker_that_dies_again_while_restoring():
    # (passed on the old code too: the driver keeps the records until a session holds them)
    async with silent_fleet(backoff_min=0.05) as (f, c, _):
        await doubt_then_restart(f, c)

        async def dies():
            f.dead.add(0)
            raise ConnectionLostError("connect: worker 0 died; not re-sent")
        patch_connect(f, 0, dies)
        await f.restored(0)                                 # its try ends with the worker
        assert "silent" in c._missing and set(c._doubts["silent"]) == {(0, 1, 5002)}
        await f.restart(0)
        await f.restored(0)
        assert "silent" not in c._missing
        with pytest.raises(CommandInDoubt, match="connection was lost.*ioa=5002"):
            await c.command("silent", 1, 5002, "C_SC_NA_1", 1, timeout=0.2)
