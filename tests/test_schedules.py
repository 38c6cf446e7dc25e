"""Session.set_schedules: the interrogation and clock sync schedules changed on a live link."""
import asyncio

import pytest

import iec104
from iec104.errors import SettingsError
from iec104.outstation import Outstation

from waiting import round_trips, wait_for


async def test_schedules_set_on_a_live_session_start_change_and_stop():
    async with Outstation(stations=1, points=5) as out, iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port)
        rtu.set_schedules(gi_interval=0.05, gi_group=2, clock_sync_interval=0.05)
        assert (rtu.settings.gi_interval, rtu.settings.gi_group) == (0.05, 2)
        await wait_for(lambda: out.counts["requests"] >= 4 and out.clock_offset_ms is not None)
        rtu.set_schedules(gi_interval=None, clock_sync_interval=None)      # off
        await round_trips(rtu)
        before = out.counts["requests"]
        await asyncio.sleep(0.2)                                             # four periods
        assert out.counts["requests"] == before


async def test_a_bad_schedule_changes_nothing():
    async with Outstation(stations=1, points=5) as out, iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port, gi_interval=600)
        with pytest.raises(SettingsError, match="gi_interval"):
            rtu.set_schedules(gi_interval=-5)
        with pytest.raises(SettingsError, match="gi_group"):
            rtu.set_schedules(gi_group=17)
        with pytest.raises(SettingsError, match="not a schedule: t1"):
            rtu.set_schedules(t1=3)
        assert (rtu.settings.gi_interval, rtu.settings.gi_group) == (600, None)
