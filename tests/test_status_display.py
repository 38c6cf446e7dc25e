"""The session table of poll and watch (issue 14): TLS on/off with the peer certificate's
subject and expiry, and a redundancy group's active address and switches."""
import asyncio
import datetime as dt
import types

import pytest

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


class _Fleet:
    """A Master as the poll's live display sees it: ``n`` sessions' status, some unwell."""

    def __init__(self, n, unwell=(), slow=0.0):
        self.n, self.unwell, self.slow, self.calls = n, set(unwell), slow, 0

    def __len__(self):
        return self.n * 10

    def status(self):
        import time
        self.calls += 1
        time.sleep(self.slow)
        return [{"name": f"rtu{i}", "tcp_state": "connected",
                 "data_transfer": "stopped" if i in self.unwell else "started",
                 "health": "no frame for 40 s" if i in self.unwell else "ok (frame 0.1 s ago)",
                 "rtt": None, "devices": 1, "points": 10, "frames_in": 5, "bad_frames": 0,
                 "reconnects": 0, "tls": None, "last_error": None} for i in range(self.n)]


async def test_the_live_table_of_a_fleet_lists_the_unwell_first_and_sums_up_the_rest(capsys):
    # 10,000 rows twice a second were the poll's own CPU (a status() of 10,000 sessions
    # alone takes ~0.2 s) and no operator reads them: the ones that need a look, then a sum
    live = console.Live(_Fleet(1000, unwell={500, 900}), down={"rtu-x": "refused"})
    try:
        t = live._render()
    finally:
        live.stop()
    # and so is the table printed at the end (stdout not a terminal): a table of every RTU took
    # 1.3 s at 1,000 RTUs and 11 s at 10,000 (1.4 MB of lines) when the poll stopped
    last = capsys.readouterr().out
    assert "1001 RTUs: 998 started, 998 healthy, 1 down" in last.replace("\n", " ")
    assert "rtu500" in last and "rtu999" not in last and f"{1001 - console.LIVE_ROWS} more" in last
    names = [str(c) for c in t.columns[0].cells]          # (Text: shown as written)
    assert len(names) == console.LIVE_ROWS + 1
    assert names[:3] == ["rtu-x", "rtu500", "rtu900"]          # down, then unwell
    assert names[-1] == f"... {1001 - console.LIVE_ROWS} more"
    assert "1001 RTUs: 998 started, 998 healthy, 1 down" in str(t.title)
    small = console.Live(_Fleet(3))
    try:
        assert [str(c) for c in small._render().columns[0].cells] == ["rtu0", "rtu1", "rtu2"]
    finally:
        small.stop()


async def test_the_live_display_waits_longer_when_a_refresh_is_slow(monkeypatch):
    # at most about a tenth of the loop for the display, however many RTUs
    waits = []
    real_sleep = asyncio.sleep

    async def sleep(s):
        waits.append(s)
        if len(waits) >= 3:
            raise asyncio.CancelledError
        await real_sleep(0)
    # console's asyncio only (the loop and the test's own waits keep the real sleep)
    monkeypatch.setattr(console, "asyncio", types.SimpleNamespace(
        sleep=sleep, get_running_loop=asyncio.get_running_loop))
    fleet = _Fleet(5, slow=0.05)
    live = console.Live(fleet, json_lines=True)
    with pytest.raises(asyncio.CancelledError):
        await live.task
    assert waits[0] == 1.0 and waits[1] >= 9 * 0.05 and fleet.calls == 2


def test_the_session_table_shows_names_and_errors_as_text(capsys):
    """A session's name, a certificate subject and an error carry whatever the RTU or the
    target file put there: Rich markup is shown as written, control characters never reach
    the terminal."""
    row = {**_Fleet(1).status()[0], "name": "[bold red]rtu[/]", "last_error":
           "\x1b[2Jrefused [link=http://evil]here[/link]",
           "tls": {"version": "TLSv1.3", "peer_subject": "CN=\x1b]0;pwned\x07x"}}
    t = console.status_table([row], down={"[i]down[/i]": "\x1b[31mno"})
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "\x07" not in shown and "pwned" in shown
    cells = [str(c) for col in t.columns for c in col.cells]
    assert "[bold red]rtu[/]" in cells and "[i]down[/i]" in cells
    assert "\N{REPLACEMENT CHARACTER}[2Jrefused [link=http://evil]here[/link]" in cells
    console.say("wrote 3 rows to [x].csv\x1b[2J")
    assert capsys.readouterr().out.startswith("wrote 3 rows to [x].csv\N{REPLACEMENT CHARACTER}")
