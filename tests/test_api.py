"""The public surface: what scripts and type checkers see, typed keyword by keyword."""
import ast
import asyncio
import dataclasses
import inspect
import ssl
import typing
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import iec104
from iec104 import NO_TIME, POINT_DTYPE, Cot, CounterQuality, Quality, SessionSettings
from iec104.errors import SettingsError
from iec104.master import Master
from iec104.settings import DEFAULT
from iec104.store import ParquetSink
from iec104.targets import parse_targets

from waiting import wait_for

INIT = Path(iec104.__file__)


# ---- Outstation -------------------------------------------------------------------------------

def test_outstation_is_exported_and_imported_statically():
    from iec104.outstation import Outstation
    assert "Outstation" in iec104.__all__ and iec104.Outstation is Outstation
    # a type checker sees it: imported by an import statement of the module, not __getattr__
    tree = ast.parse(INIT.read_text())
    imported = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "iec104.outstation" for a in node.names}
    assert "Outstation" in imported


def test_every_name_of_all_exists():
    for name in iec104.__all__:
        assert getattr(iec104, name) is not None, name


# ---- Master.connect ---------------------------------------------------------------------------

def _connect_keywords():
    sig = inspect.signature(Master.connect)
    return {n: p for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}


def test_connect_spells_out_every_session_setting_as_a_keyword():
    keywords = _connect_keywords()
    assert list(keywords) == ["name"] + [f.name for f in dataclasses.fields(SessionSettings)]
    params = inspect.signature(Master.connect).parameters.values()
    assert not any(p.kind is p.VAR_KEYWORD for p in params)


def test_connect_keywords_have_the_settings_types_and_default_to_the_masters():
    hints = typing.get_type_hints(Master.connect)
    settings = typing.get_type_hints(SessionSettings)
    for f in dataclasses.fields(SessionSettings):
        declared = set(typing.get_args(settings[f.name]) or (settings[f.name],))
        accepted = set(typing.get_args(hints[f.name]))
        assert declared <= accepted, f.name            # every value the setting takes
        nullable = type(None) in declared
        default = _connect_keywords()[f.name].default
        # None means "the master's default", unless None is itself a value of the setting
        # (tz: UTC; intervals: off; gi_group: station): then leaving it out does
        assert default is (DEFAULT if nullable else None), f.name
        assert accepted - declared == ({type(DEFAULT)} if nullable else {type(None)}), f.name


@pytest.fixture
def no_network(monkeypatch):
    async def nothing(self):
        return None
    monkeypatch.setattr(iec104.Session, "start", nothing)
    monkeypatch.setattr(iec104.Session, "close", nothing)


OTHER = dict(t0=5.0, t1=7.0, t2=3.0, t3=9.0, k=24, w=16, cot_size=1, ca_size=1, ioa_size=2,
             tz="Europe/Berlin", gi_on_start=False, gi_interval=600.0, gi_group=3,
             ci_interval=900.0, qcc=1, clock_sync_interval=3600.0, reconnect=False,
             backoff_min=1.0, backoff_max=2.0, backoff_reset=5.0, request_timeout=4.0,
             debug_frames=10, max_points=100, max_backlog=4096,
             tls=ssl.create_default_context(), ca=(3, 4))


def test_other_values_cover_every_setting():
    assert set(OTHER) == {f.name for f in dataclasses.fields(SessionSettings)}
    assert all(getattr(SessionSettings(), k) != v for k, v in OTHER.items())


async def test_every_connect_keyword_reaches_the_session(no_network):
    async with Master() as master:
        rtu = await master.connect("127.0.0.1", 2404, **OTHER)
        assert rtu.settings == SessionSettings(**OTHER)


async def test_none_and_left_out_keywords_take_the_masters_defaults(no_network):
    async with Master(t1=20.0, k=30, w=20, gi_interval=600.0, tz="Europe/Berlin") as master:
        a = await master.connect("127.0.0.1", t1=None, k=None)
        assert (a.settings.t1, a.settings.k, a.settings.w) == (20.0, 30, 20)
        assert (a.settings.gi_interval, a.settings.tz) == (600.0, "Europe/Berlin")
        b = await master.connect("127.0.0.1", gi_interval=None, tz=None)     # off, and UTC
        assert (b.settings.gi_interval, b.settings.tz, b.settings.t1) == (None, None, 20.0)


async def test_connect_refuses_unknown_or_mistyped_settings(no_network):
    async with Master() as master:
        with pytest.raises(TypeError):
            await master.connect("127.0.0.1", t4=1.0)
        for bad in (dict(k=12.5), dict(gi_group=3.0), dict(reconnect="no"), dict(t1="15"),
                    dict(k=True)):
            with pytest.raises(SettingsError):
                await master.connect("127.0.0.1", **bad)


# ---- target files -----------------------------------------------------------------------------

def test_target_files_read_each_setting_as_its_type(tmp_path):
    csv = tmp_path / "rtus.csv"
    csv.write_text("host,gi_group,tz,gi_interval,reconnect,t1,k\n"
                   "10.0.0.7,3,Europe/Berlin,600,no,20,24\n")
    (t,) = parse_targets([str(csv)])
    assert t.settings == {"gi_group": 3, "tz": "Europe/Berlin", "gi_interval": 600.0,
                          "reconnect": False, "t1": 20.0, "k": 24}
    assert type(t.settings["gi_group"]) is int and type(t.settings["k"]) is int
    SessionSettings(**t.settings)
    toml = tmp_path / "rtus.toml"
    toml.write_text('[[rtu]]\nhost = "h"\ngi_group = 3\ntz = "Europe/Berlin"\n'
                    'gi_interval = 600\nt1 = 20\n')
    (t,) = parse_targets([str(toml)])
    assert t.settings == {"gi_group": 3, "tz": "Europe/Berlin", "gi_interval": 600, "t1": 20}
    SessionSettings(**t.settings)


@pytest.mark.parametrize("line", ["gi_group = 3.5", 'gi_group = "three"', "k = 12.0",
                                  "k = true", 'reconnect = "maybe"', "reconnect = 1",
                                  'tz = 1', 't1 = "soon"'])
def test_target_files_refuse_a_value_of_another_type(tmp_path, line):
    toml = tmp_path / "rtus.toml"
    toml.write_text(f'[[rtu]]\nhost = "h"\n{line}\n')
    with pytest.raises(SettingsError, match=line.split()[0]):
        parse_targets([str(toml)])


@pytest.mark.parametrize("setting", ["t0", "t1", "t3", "request_timeout", "backoff_max",
                                     "gi_interval"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_timer_that_never_runs_out_is_a_settings_error(setting, value):
    """inf or nan seconds: a dead link would never be detected, a request never given up."""
    with pytest.raises(SettingsError, match=setting):
        SessionSettings(**{setting: value})


@pytest.mark.parametrize("cell", ["3.0", "3.5", "x"])
def test_csv_targets_refuse_an_int_setting_that_is_no_int(tmp_path, cell):
    csv = tmp_path / "rtus.csv"
    csv.write_text(f"host,gi_group\nh,{cell}\n")
    with pytest.raises(SettingsError, match="gi_group"):
        parse_targets([str(csv)])


@pytest.mark.parametrize("port", ["true", "2404.7", "[2404]"])
def test_a_target_files_port_is_an_integer_or_refused(tmp_path, port):
    """port is read as every int setting: a bool, a float or a list is a SettingsError naming
    the file's row, never truncated to a port."""
    toml = tmp_path / "rtus.toml"
    toml.write_text(f'[[rtu]]\nhost = "127.0.0.1"\nport = {port}\n')
    with pytest.raises(SettingsError, match=r"rtus\.toml \[\[rtu\]\] #1: port"):
        parse_targets([str(toml)])


def test_a_target_files_numeric_name_is_a_string(tmp_path):
    toml = tmp_path / "rtus.toml"
    toml.write_text('[[rtu]]\nhost = "127.0.0.1"\nname = 7\n')
    assert parse_targets([str(toml)])[0].name == "7"


def test_a_target_files_paths_are_read_beside_it(tmp_path, monkeypatch):
    """Relative ``points`` and ``tls_*`` paths are the file's folder's; absolute ones stay."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "ca.pem").write_text("")
    monkeypatch.chdir(tmp_path)
    (site / "rtus.toml").write_text(f'[[rtu]]\nhost = "h"\npoints = "points.csv"\n'
                                    f'tls_ca = "ca.pem"\n[[rtu]]\nhost = "g"\n'
                                    f'points = "{tmp_path / "p.csv"}"\n')
    a, b = parse_targets(["site/rtus.toml"])
    assert Path(a.points) == Path("site/points.csv") and b.points == str(tmp_path / "p.csv")
    assert Path(a.settings["tls"].ca) == Path("site/ca.pem")


@pytest.mark.parametrize("rows, says", [
    ('[[rtu]]\nhost = "h"\n[[rtu]]\nhost = "h"\nport = 2404\n', "h:2404"),
    ('[[rtu]]\nhost = "h"\nname = "a"\n[[rtu]]\nhost = "g"\nname = "a"\n', "name a"),
    ('[[rtu]]\nhost = "h"\n[[rtu]]\nhost = "g"\nstandby = ["h:2404"]\n', "h:2404"),
])
def test_a_target_file_names_each_rtu_once(tmp_path, rows, says):
    """The same address (or standby address) or name twice is refused, naming both rows:
    two sessions to one RTU, or two rows sharing a name in the tables."""
    toml = tmp_path / "rtus.toml"
    toml.write_text(rows)
    with pytest.raises(SettingsError, match=rf"#2: .*{says}.*#1"):
        parse_targets([str(toml)])
    with pytest.raises(SettingsError, match="given twice"):
        parse_targets(["h", "h:2404"])


@pytest.mark.parametrize("standby", ['["h:2404"]', '["g:2404", "g"]'])
def test_a_target_whose_standby_repeats_an_address_is_refused(tmp_path, standby):
    """A group's addresses are each one more connection: its own address again as a
    standby, or a standby twice, would open two connections to one RTU."""
    toml = tmp_path / "rtus.toml"
    toml.write_text(f'[[rtu]]\nhost = "h"\nstandby = {standby}\n')
    with pytest.raises(SettingsError, match=r"#1: .*:2404 given twice"):
        parse_targets([str(toml)])


# ---- enums ------------------------------------------------------------------------------------

# IEC 60870-5-101, 7.2.3: the causes of transmission the standard defines (0, 14..19, 42, 43
# are not used or reserved; 48..63 are for special use, the private range)
DEFINED = [*range(1, 14), *range(20, 42), *range(44, 48)]


def test_every_cause_of_the_standard_is_a_cot():
    for code in DEFINED + list(range(48, 64)):
        assert Cot(code) == code
    assert Cot(22) is Cot.INTERROGATED_BY_GROUP_2
    assert [Cot(21 + g - 1).name for g in (1, 16)] == ["INTERROGATED_BY_GROUP_1",
                                                       "INTERROGATED_BY_GROUP_16"]
    assert [Cot(c).name for c in range(38, 42)] == [f"REQUESTED_BY_GROUP_{g}_COUNTER"
                                                   for g in range(1, 5)]
    assert Cot(50).name == "SPECIAL_USE_50" and Cot(50) is Cot(50)
    for code in (0, 14, 19, 42, 43, 64, -1):
        with pytest.raises(ValueError):
            Cot(code)


def test_each_cot_member_is_one_code():
    assert sorted(Cot.__members__.values()) == sorted(set(Cot.__members__.values()))
    assert sorted(int(c) for c in Cot) == DEFINED


def test_quality_and_counter_quality_are_distinct_families():
    assert Quality.SB is not CounterQuality.CY and Quality.NT is not CounterQuality.CA
    assert not hasattr(Quality, "CY") and not hasattr(Quality, "CA")
    assert (CounterQuality.CY, CounterQuality.CA, CounterQuality.IV) == (0x20, 0x40, 0x80)
    assert CounterQuality.SEQUENCE == 0x1F
    for flag in (Quality, CounterQuality, iec104.TimeFlag, iec104.Flag):
        assert len(flag.__members__) == len({int(m) for m in flag.__members__.values()}), flag


def test_a_counter_reading_quality_reads_as_counter_quality():
    # M_IT_NA_1, CA 1, IOA 5: counter 1234, sequence 7, carry and adjusted (CY|CA|SQ=7)
    apdu = bytes.fromhex("681200000000" "0f01" "2500" "0100" "050000" "d2040000" "67")
    (p,) = iec104.decode(apdu)
    q = CounterQuality(int(p["quality"]))
    assert CounterQuality.CY in q and CounterQuality.CA in q and CounterQuality.IV not in q
    assert q & CounterQuality.SEQUENCE == 7


def test_the_field_sizes_are_the_codecs_keywords():
    sizes = SessionSettings(ca_size=1, ioa_size=2).sizes
    assert sizes == {"cot_size": 2, "ca_size": 1, "ioa_size": 2}
    iec104.Decoder(**sizes)                     # the keywords the codec takes


# ---- Master: close, parameters -----------------------------------------------------------------

def rows(n=3, *, station=0, ca=1, start=1):
    p = np.zeros(n, POINT_DTYPE)
    p["type_id"], p["station"], p["ca"] = 13, station, ca
    p["ioa"] = np.arange(start, start + n)
    p["time"] = NO_TIME
    p["cot"] = 3
    return p


async def test_close_ends_the_event_readers():
    """Master.close() closes the event log's readers: an ``async for batch in
    master.events()`` ends."""
    m = iec104.Master()
    got = []

    async def read():
        async for batch in m.events():
            got.append(batch)
    reader = asyncio.create_task(read())
    try:
        await asyncio.sleep(0.01)
        m.store.update(rows(3))
        await wait_for(lambda: got, 1)
        await m.close()
        done, _ = await asyncio.wait({reader}, timeout=1.0)
        assert done, "the reader still waits after Master.close()"
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def test_close_raises_a_sinks_error_once_it_released_the_rest(tmp_path, monkeypatch):
    """A sink's error at close is raised by Master.close() after every sink and reader was
    closed and the loop's read coalescing released."""
    released = []
    monkeypatch.setattr("iec104.master.release_coalesce",
                        lambda loop, owner: released.append(owner))
    m = iec104.Master()
    m.store.add_sink(ParquetSink(tmp_path / "ev", flush_interval=60))
    stream = m.events(lossless=True)
    m.store.update(rows(3))
    (tmp_path / "ev").rmdir()
    (tmp_path / "ev").write_text("")            # no directory can be made there
    with pytest.raises(OSError):
        await m.close()
    assert released == [m] and not m.store.log.consumers
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_parameters_show_a_silent_stations_points_as_missing(no_network):
    """A point list for every station applies to every connected station, not only to those
    that sent data: the points of a connected RTU that has sent nothing (down, or before its
    GI) are in parameters(), "missing"."""
    async with iec104.Master() as m:
        await m.connect("127.0.0.1", 1, name="a")
        await m.connect("127.0.0.1", 2, name="b")
        m.import_points(pl.DataFrame({"ca": [1, 1], "ioa": [1, 2], "type": ["M_ME_NC_1"] * 2,
                                      "name": ["x", "y"]}))
        m.store.update(rows(2, station=0))      # station 0 answered, station 1 did not
        df = m.parameters()
        assert df.filter(pl.col("session") == "a")["status"].to_list() == ["ok", "ok"]
        b = df.filter(pl.col("session") == "b")
        assert b["status"].to_list() == ["missing", "missing"], \
            df.select("station", "session", "ioa", "status")


async def test_a_second_session_of_the_same_name_is_refused(no_network):
    """Names address sessions (master.session(name), tables, logs): a name given twice is
    refused before anything is opened, so a command by name never reaches the wrong RTU."""
    async with iec104.Master() as m:
        a = await m.connect("127.0.0.1", 1, name="north")
        with pytest.raises(iec104.InvalidRequestError, match="north"):
            await m.connect("127.0.0.1", 2, name="north")
        assert m.sessions == [a] and m.session("north") is a


async def test_default_names_of_sessions_to_one_address_are_distinct(no_network):
    """Sessions to the same host and port without a name (many to one simulator) are each
    found by their own name: the first is "host:port", the next "host:port #2", ..."""
    async with iec104.Master() as m:
        s = [await m.connect("127.0.0.1", 2404) for _ in range(3)]
        assert [x.name for x in s] == ["127.0.0.1:2404", "127.0.0.1:2404 #2", "127.0.0.1:2404 #3"]
        assert [m.session(x.name) for x in s] == s
