"""What keeps thousands of RTUs in one process cheap: read coalescing (``Master(coalesce=...)``,
``poll --coalesce``, ``Cluster(coalesce=...)``: the loop naps after an iteration that read
spontaneous data, so that one wake-up serves many RTUs; nothing is lost or reordered by it,
requests are not slowed), and the poll's sessions kept out of Python's full collections."""
import asyncio
import threading

import numpy as np
import pytest

import iec104
import iec104.protocol as protocol
from iec104 import cli
from iec104.cli import main
from iec104.cluster_worker import Worker
from iec104.errors import SettingsError
from iec104.outstation import Outstation
from iec104.protocol import shared_buffers

from test_cli import Sim          # an Outstation in a thread: the master's naps do not sleep it
from waiting import wait_for


def record_naps(monkeypatch) -> list:
    """The loop's naps: the ``time.sleep`` calls of this thread (the loop's), not those of
    other threads of the worker (a subprocess wait with a timeout sleeps 1, 2, 4 ... ms, as
    Ray's stop in its thread does after tests/test_cluster.py: one CI run failed on them)."""
    naps, sleep, loop_thread = [], protocol.time.sleep, threading.get_ident()

    def recording(seconds):
        if threading.get_ident() == loop_thread:
            naps.append(seconds)
        sleep(seconds)
    monkeypatch.setattr(protocol.time, "sleep", recording)
    return naps


async def test_a_coalescing_master_naps_and_loses_nothing(monkeypatch):
    naps = record_naps(monkeypatch)
    outs = [Outstation(stations=1, points=200, rate=400) for _ in range(3)]
    async with outs[0], outs[1], outs[2], iec104.Master(gi_on_start=False, coalesce=0.004) as m:
        rtus = [await m.connect("127.0.0.1", out.port) for out in outs]
        in_gi = int((~np.isin(outs[0].image["type_id"], (15, 16, 37))).sum())   # no counters
        assert [await r.interrogate() for r in rtus] == [in_gi] * 3
        got = []

        async def read():
            async for batch in m.events():
                got.append(batch)
        reader = asyncio.create_task(read())
        await asyncio.sleep(0.3)
        for out in outs:
            out.rate = 0                                # the streams end; all of them arrive
        sent = lambda: sum(o.counts["spontaneous_objects"] for o in outs)    # noqa: E731
        logged = lambda: m.store.log.snapshot()            # noqa: E731  every row received
        await wait_for(lambda: int((logged()["cot"] == 3).sum()) == sent(), 5)
        await asyncio.sleep(0.05)
        reader.cancel()
        rows = logged()
    assert naps and set(naps) == {0.004}
    spont = rows[rows["cot"] == 3]
    assert len(spont) == sent() > 50 and not any(o.counts["frames_dropped"] for o in outs)
    assert sum(int((b["cot"] == 3).sum()) for b in got) > 0       # the reader was served
    for station in range(3):         # each session's stream: in order, nothing twice
        t = spont[spont["station"] == station]["recv_ns"]
        assert np.all(np.diff(t) >= 0)
    assert shared_buffers(asyncio.get_running_loop())[0].on_read is None   # closed: off again


@pytest.mark.parametrize("bad", [-0.1, 2.0, "5", None, True])
def test_coalesce_out_of_range_is_a_settings_error(bad):
    with pytest.raises(SettingsError, match="coalesce"):
        iec104.Master(coalesce=bad)


async def test_closing_one_master_leaves_the_other_masters_coalescing():
    loop = asyncio.get_running_loop()
    rb = shared_buffers(loop)[0]
    async with Outstation(stations=1, points=5) as out:
        a = iec104.Master(gi_on_start=False, coalesce=0.002)
        b = iec104.Master(gi_on_start=False, coalesce=0.004)
        plain = iec104.Master(gi_on_start=False)
        for m in (a, b, plain):
            await m.connect("127.0.0.1", out.port)
        assert rb.on_read is not None
        await b.close()
        assert rb.on_read is not None           # a still asks for it
        await plain.close()
        assert rb.on_read is not None           # a master without coalescing changes nothing
        await a.close()
        assert rb.on_read is None               # the last one let go: off


async def test_a_coalescing_master_does_not_nap_while_requests_are_answered(monkeypatch):
    # a GI at k = 12 arrives window by window: a nap after each read would make it wait the
    # nap once per window (0.07 M objects/s with 5 ms instead of 2.8), and an ActCon would
    # wait a nap too; the naps are for spontaneous data only
    naps = record_naps(monkeypatch)
    with Sim(stations=1, points=3000, k=12) as sim, Sim(stations=1, points=50, rate=200) as chatty:
        async with iec104.Master(gi_on_start=False, coalesce=0.02, k=12, w=8) as m:
            rtu = await m.connect("127.0.0.1", sim.out.port)
            await wait_for(lambda: rtu.status()["data_transfer"] == "started", 5)
            naps.clear()
            n = await rtu.interrogate(ca=1, timeout=30)
            in_gi = naps[:]
            assert n > 1000 and rtu.status()["points"] >= n     # many windows of k = 12
            await rtu.command(1, 1, "C_SE_NC_1", 1.5, select=True, timeout=10)  # IOA 1: a float
            in_command = naps[len(in_gi):]
            await m.connect("127.0.0.1", chatty.out.port)      # spontaneous data: naps
            await wait_for(lambda: len(naps) > len(in_gi) + len(in_command) + 3, 5)
    assert in_gi == [] and in_command == []
    assert set(naps) == {0.02}


def test_poll_coalesce_naps_the_loop_and_a_bad_value_is_an_input_error(monkeypatch, capsys):
    naps = record_naps(monkeypatch)
    with Sim(stations=1, points=30, rate=500) as sim:
        assert main(["poll", f"127.0.0.1:{sim.out.port}", "--duration", "0.5",
                     "--coalesce", "5"]) == 0
    assert len(naps) > 3 and set(naps) == {0.005}
    capsys.readouterr()
    for bad in ("2000", "-1", "nan"):
        assert main(["poll", "127.0.0.1:1", "--duration", "1", "--coalesce", bad]) == 1
        assert "--coalesce" in capsys.readouterr().err


def test_a_cluster_worker_master_coalesces():
    worker = Worker(0, {"gi_on_start": False}, 1000, 0.005)    # the actor's class, without Ray
    try:
        assert worker.master.coalesce == 0.005
    finally:
        asyncio.run(worker.close())
        worker.loop.call_soon_threadsafe(worker.loop.stop)
    pytest.importorskip("ray")
    from iec104.cluster import Cluster
    with pytest.raises(SettingsError, match="coalesce"):
        Cluster(workers=1, coalesce=5)                        # ms for s: refused at once


def test_poll_takes_its_sessions_out_of_the_full_collections_while_it_runs(monkeypatch):
    # with 10,000 RTUs a full collection walked every session's objects: 0.15-0.4 s stops
    # of the loop every few seconds in a poll (bench_trickle, p99 latency 0.3-0.4 s)
    calls = []
    monkeypatch.setattr(cli.gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(cli.gc, "unfreeze", lambda: calls.append("unfreeze"))
    with Sim(stations=1, points=5) as sim:
        assert main(["poll", f"127.0.0.1:{sim.out.port}", "--duration", "0.3"]) == 0
    assert calls == ["freeze", "unfreeze"]
