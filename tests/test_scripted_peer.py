"""The scripted peer behaves as an outstation by default, so that the fault tests built on it
prove what they name and nothing waits on a timeout the peer causes."""
import asyncio

import iec104

from scripted_peer import ScriptedPeer
from waiting import wait_for

STOPDT_ACT, STOPDT_CON = 0x13, 0x23


async def test_the_scripted_peer_confirms_stopdt_so_close_does_not_wait_for_its_timeout():
    async with ScriptedPeer() as peer, iec104.Master(gi_on_start=False) as master:
        await master.connect("127.0.0.1", peer.port)
        # close() waits up to 2 s for STOPDT con; answered, it returns in a round trip
        await asyncio.wait_for(master.close(), timeout=1.0)
        assert [int(f["u_function"]) for f, _ in peer.received(fmt=2)][-1] == STOPDT_ACT


async def test_a_peer_told_not_to_confirm_stopdt_leaves_close_to_its_timeout():
    async with ScriptedPeer(auto_stop=False) as peer, iec104.Master(gi_on_start=False) as master:
        rtu = await master.connect("127.0.0.1", peer.port)
        close = asyncio.ensure_future(master.close())
        await wait_for(lambda: STOPDT_ACT in [int(f["u_function"])
                                              for f, _ in peer.received(fmt=2)])
        await asyncio.sleep(0.05)                       # a round trip: no answer came
        assert not close.done() and rtu.data_transfer == "stopping"
        peer.send(bytes([0x68, 4, STOPDT_CON, 0, 0, 0]))    # the test answers instead
        await asyncio.wait_for(close, timeout=1.0)
