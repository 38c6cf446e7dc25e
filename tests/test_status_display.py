"""The session table of poll and watch (issue 14): TLS on/off with the peer certificate's
subject and expiry, and a redundancy group's active address and switches."""
import datetime as dt

import iec104
from iec104 import console
from iec104.outstation import Outstation

from test_tls import HOST, PKI
from waiting import wait_for


async def test_the_table_shows_tls_with_the_peer_subject_and_expiry(tmp_path, capsys):
    pki = PKI(tmp_path)
    async with Outstation(stations=1, points=5, tls=pki.server_tls()) as out, \
            iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect(HOST, out.port, tls=pki.client_tls(), t0=5)
        st = rtu.status()
        expires = dt.datetime.fromtimestamp(st["tls"]["peer_expires"], dt.timezone.utc)
        text = console.link_text(st)
        assert text.startswith("TLS TLSv1.") and "rtu-7" in text
        assert text.endswith(f", expires {expires:%Y-%m-%d}")
        console.status_table(m.status())
    assert "link" in capsys.readouterr().out


def test_tls_off_and_an_expired_peer_certificate():
    assert console.link_text({"tls": None}) == "TLS off"
    past = dt.datetime(2020, 1, 2, tzinfo=dt.timezone.utc).timestamp()
    assert console.tls_text({"on": True, "version": "TLSv1.3", "peer_subject": "commonName=x",
                             "peer_expires": past}) \
        == "TLS TLSv1.3: commonName=x, expires 2020-01-02 (EXPIRED)"


async def test_a_redundancy_group_shows_its_active_address_and_the_switch():
    async with Outstation(stations=1, points=5, standby_ports=[0]) as out, iec104.Master() as m:
        first, second = out.ports
        rtu = await m.connect(HOST, first, standby=[(HOST, second)], t1=0.5, t2=0.2, t3=1)
        assert console.link_text(rtu.status()) == f"TLS off; active {HOST}:{first}, 0 switches"
        rtu.active._proto.transport.abort()          # the active connection fails
        await wait_for(lambda: rtu.status()["switches"] == 1 and rtu.active is not None)
        text = console.group_text(rtu.status())
        assert text.startswith(f"active {HOST}:{second}, 1 switch, last ")
        assert f" from {HOST}:{first}: " in text
