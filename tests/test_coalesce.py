"""Read coalescing (``Master(coalesce=...)``): the loop naps after an iteration that read,
so that one wake-up serves many RTUs; nothing is lost or reordered by it."""
import asyncio

import numpy as np
import pytest

import iec104
import iec104.protocol as protocol
from iec104.errors import SettingsError
from iec104.outstation import Outstation
from iec104.protocol import shared_buffers

from waiting import wait_for


async def test_a_coalescing_master_naps_and_loses_nothing(monkeypatch):
    naps = []
    sleep = protocol.time.sleep
    monkeypatch.setattr(protocol.time, "sleep", lambda s: (naps.append(s), sleep(s)))
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
