"""Nothing operates that the user did not mean: a command with an address that does not fit
its field, a value outside its type's range or the point list's limits, or a wrong type is
refused before anything is encoded or sent; a select the RTU may hold is broken when no
execute follows it."""
import asyncio
import datetime as dt
import math
import socket
import time

import numpy as np
import pytest

import iec104
from iec104 import decode, decode_frames
from iec104._encode import encode_asdu, encode_points, i_frame
from iec104.cli import main, sample_points
from iec104.commands import build_command, check_address
from iec104.errors import (
    CommandInDoubt, ConfirmationTimeout, ConnectionLostError, InvalidRequestError,
)
from iec104.metadata import Catalog, CommandNotAllowed, CommandOutOfLimits
from iec104.types import POINT_DTYPE, TypeID

from scripted_peer import ScriptedPeer, i_frame as raw_i_frame, s_frame
from test_confirmations import sc
from waiting import round_trips, wait_for

STD = {"cot_size": 2, "ca_size": 2, "ioa_size": 3}
SMALL = {"cot_size": 1, "ca_size": 1, "ioa_size": 2}


def sent(asdu: bytes, sizes: dict):
    """The (ca, ioa, type_id, value) an RTU would read from an ASDU."""
    row = decode(i_frame(asdu, 0, 0), **sizes)[0]
    return int(row["ca"]), int(row["ioa"]), int(row["type_id"]), float(row["value"])


# ---- 1. addresses ----------------------------------------------------------------------------

@pytest.mark.parametrize("ca, ioa, sizes, field", [
    (300, 5, SMALL, "CA"),          # executed at CA 44 before
    (5, 65538, SMALL, "IOA"),       # executed at IOA 2 before
    (65537, 5, STD, "CA"),          # executed at CA 1 before
    (-1, 5, STD, "CA"),             # went out as the broadcast 65535 before
    (0, 5, STD, "CA"),              # CA 0 is not used
    (65535, 5, STD, "CA"),          # the broadcast: a command to every station
    (255, 5, SMALL, "CA"),          # the broadcast of a 1-octet CA
    (1, -5, STD, "IOA"),
    (1, 1 << 24, STD, "IOA"),
    (True, 5, STD, "CA"),
    (1.0, 5, STD, "CA"),
    ("1", 5, STD, "CA"),
    (None, 5, STD, "CA"),
    (1, 5.0, STD, "IOA"),
    (1, True, STD, "IOA"),
])
def test_an_address_that_does_not_fit_is_refused_before_encoding(ca, ioa, sizes, field):
    with pytest.raises(InvalidRequestError, match=field) as e:
        build_command("C_SC_NA_1", ca, ioa, 1, sizes=sizes)
    assert "\n" not in str(e.value)
    with pytest.raises(InvalidRequestError, match=field):
        check_address(ca, ioa, sizes, broadcast=False)


def test_address_messages_name_the_field_its_size_and_range():
    with pytest.raises(InvalidRequestError) as e:
        build_command("C_SC_NA_1", 300, 5, 1, sizes=SMALL)
    assert "CA 300" in str(e.value) and "1 octet" in str(e.value) and "1..254" in str(e.value)
    with pytest.raises(InvalidRequestError) as e:
        build_command("C_SC_NA_1", 1, 65538, 1, sizes=SMALL)
    assert "IOA 65538" in str(e.value) and "2 octets" in str(e.value) and "0..65535" in str(e.value)
    with pytest.raises(InvalidRequestError, match="broadcast"):
        build_command("C_SE_NC_1", 65535, 5, 1.0, sizes=STD)


@pytest.mark.parametrize("ca, ioa, sizes", [
    (1, 0, STD), (65534, 16_777_215, STD), (254, 65535, SMALL), (1, 255, {**SMALL, "ioa_size": 1}),
])
def test_the_edges_of_the_fields_go_out_as_asked(ca, ioa, sizes):
    t, asdu = build_command("C_SC_NA_1", ca, ioa, 1, sizes=sizes)
    assert sent(asdu, sizes) == (ca, ioa, 45, 1.0)


def test_system_requests_may_address_the_broadcast():
    assert check_address(65535, 0, STD, broadcast=True) == (65535, 0)
    assert check_address(255, 0, SMALL, broadcast=True) == (255, 0)
    for ca in (0, 256, -1):
        with pytest.raises(InvalidRequestError, match="CA"):
            check_address(ca, 0, SMALL, broadcast=True)


@pytest.mark.parametrize("ca, ioa, sizes", [
    (300, 5, SMALL), (5, 65538, SMALL), (65537, 5, STD), (-1, 5, STD), (1, -5, STD),
    (1, 1 << 24, STD), (1, 256, {**SMALL, "ioa_size": 1}),
])
def test_the_encoder_refuses_what_does_not_fit_instead_of_truncating(ca, ioa, sizes):
    with pytest.raises((OverflowError, ValueError)):
        encode_asdu(45, ca, ioa, 1.0, cot=6, **sizes)


def test_the_encoder_writes_every_value_that_fits():
    # CA 0 and the broadcast are the request checks' business, not the codec's
    for ca, ioa, sizes in ((0, 0, STD), (65535, 16_777_215, STD), (255, 65535, SMALL)):
        assert sent(encode_asdu(45, ca, ioa, 1.0, cot=6, **sizes), sizes)[:2] == (ca, ioa)


def test_batch_encoding_refuses_rows_that_do_not_fit():
    rows = np.zeros(2, POINT_DTYPE)
    rows["type_id"], rows["cot"], rows["ca"] = 1, 3, 1
    rows["ioa"] = [1, 70000]
    with pytest.raises((OverflowError, ValueError), match="IOA"):
        encode_points(rows, ioa_size=2)
    rows["ioa"] = [1, 2]
    rows["ca"] = [1, 300]
    with pytest.raises((OverflowError, ValueError), match="CA"):
        encode_points(rows, ca_size=1)
    rows["ca"] = 255
    data, offsets = encode_points(rows, ca_size=1, ioa_size=2)
    assert decode(bytes(data), ca_size=1, ioa_size=2)["ca"].tolist() == [255, 255]


# ---- 2. values -------------------------------------------------------------------------------

COMMANDS = ["C_SC_NA_1", "C_DC_NA_1", "C_RC_NA_1", "C_SE_NA_1", "C_SE_NB_1", "C_SE_NC_1",
            "C_BO_NA_1", "C_SC_TA_1", "C_SE_TC_1", "C_BO_TA_1"]


@pytest.mark.parametrize("type", COMMANDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1", "abc", None, [1], 1j])
def test_a_value_that_is_not_a_finite_number_is_refused(type, value):
    with pytest.raises(InvalidRequestError) as e:
        build_command(type, 1, 5, value, sizes=STD)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("type, value", [
    ("C_SC_NA_1", 2), ("C_SC_NA_1", -1), ("C_SC_NA_1", 0.5),
    ("C_DC_NA_1", 0), ("C_DC_NA_1", 3), ("C_DC_NA_1", True), ("C_DC_NA_1", 1.5),
    ("C_RC_NA_1", 0), ("C_RC_NA_1", 3), ("C_RC_NA_1", True),
    ("C_SE_NA_1", 1.0), ("C_SE_NA_1", -1.0001), ("C_SE_NA_1", 2), ("C_SE_NA_1", True),
    ("C_SE_NB_1", 32768), ("C_SE_NB_1", -32769), ("C_SE_NB_1", 1.5), ("C_SE_NB_1", True),
    ("C_SE_NC_1", 1e39), ("C_SE_NC_1", -3.5e38), ("C_SE_NC_1", 10 ** 400), ("C_SE_NC_1", False),
    ("C_BO_NA_1", -1), ("C_BO_NA_1", 1 << 32), ("C_BO_NA_1", 1.5), ("C_BO_NA_1", True),
])
def test_a_value_outside_the_range_of_its_type_is_refused(type, value):
    with pytest.raises(InvalidRequestError):
        build_command(type, 1, 5, value, sizes=STD)


@pytest.mark.parametrize("type, value, decoded", [
    ("C_SC_NA_1", True, 1.0), ("C_SC_NA_1", 0, 0.0), ("C_SC_NA_1", 1.0, 1.0),
    ("C_DC_NA_1", 1, 1.0), ("C_DC_NA_1", 2.0, 2.0), ("C_RC_NA_1", 2, 2.0),
    ("C_SE_NA_1", -1.0, -1.0), ("C_SE_NA_1", 32767 / 32768, 32767 / 32768), ("C_SE_NA_1", 0, 0.0),
    ("C_SE_NB_1", -32768, -32768.0), ("C_SE_NB_1", 32767.0, 32767.0),
    ("C_SE_NC_1", 3.4e38, float(np.float32(3.4e38))), ("C_SE_NC_1", -12.5, -12.5),
    ("C_BO_NA_1", 0xFFFFFFFF, float(0xFFFFFFFF)), ("C_BO_NA_1", 0, 0.0),
])
def test_a_value_in_range_goes_out_as_asked(type, value, decoded):
    t, asdu = build_command(type, 1, 5, value, sizes=STD)
    assert sent(asdu, STD) == (1, 5, t, decoded)


@pytest.mark.parametrize("type, qualifier", [
    ("C_SC_NA_1", 32), ("C_DC_NA_1", -1), ("C_RC_NA_1", 1.5), ("C_SC_NA_1", True),
    ("C_SE_NC_1", 128), ("C_SE_NA_1", -1), ("C_SE_NB_1", "1"), ("C_BO_NA_1", 1),
])
def test_a_qualifier_out_of_range_is_refused(type, qualifier):
    value = {"C_DC_NA_1": 1, "C_RC_NA_1": 1}.get(type, 0)
    with pytest.raises(InvalidRequestError, match="qualifier|QU|QL"):
        build_command(type, 1, 5, value, qualifier=qualifier, sizes=STD)


@pytest.mark.parametrize("type", ["M_SP_NA_1", "C_IC_NA_1", "C_XX_NA_1", 999, "", None, 45.5])
def test_a_type_that_is_not_a_command_is_refused(type):
    with pytest.raises(InvalidRequestError):
        build_command(type, 1, 5, 1, sizes=STD)


@pytest.mark.parametrize("time", ["now", False, 1.5, math.nan, dt.date(2026, 1, 1), -1])
def test_a_time_tag_that_is_not_a_time_is_refused(time):
    with pytest.raises(InvalidRequestError, match="time"):
        build_command("C_SC_NA_1", 1, 5, 1, time=time, sizes=STD)


@pytest.mark.parametrize("time", [True, 1_700_000_000_000,
                                  dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)])
def test_a_time_tag_may_be_a_datetime_ms_or_now(time):
    t, asdu = build_command("C_SC_NA_1", 1, 5, 1, time=time, sizes=STD)
    assert t == TypeID.C_SC_TA_1
    row = decode(i_frame(asdu, 0, 0))[0]
    if time is not True:
        want = time if isinstance(time, int) else int(time.timestamp() * 1000)
        assert int(row["time"]) == want


# ---- 3. point-list limits --------------------------------------------------------------------

LIST = ("ca,ioa,station,name,type,command_type,min,max\n"
        "1,200,,TR1 voltage setpoint,M_ME_NC_1,C_SE_NC_1,100,120\n"
        "1,201,,Power limit,M_ME_NB_1,C_SE_NB_1,0,\n"
        "1,202,,Ramp,M_ME_NC_1,C_SE_NC_1,,50\n"
        "1,203,,Free setpoint,M_ME_NC_1,C_SE_NC_1,,\n"
        "1,5,,Breaker,M_SP_NA_1,C_SC_NA_1,,\n"
        "1,5,,Breaker tap,M_ST_NA_1,C_RC_NA_1,,\n"
        "1,300,1,Other RTU setpoint,M_ME_NC_1,C_SE_NC_1,0,10\n")


@pytest.fixture
def catalog(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text(LIST)
    cat = Catalog()
    cat.load(path)
    return cat


def test_a_value_outside_the_point_list_limits_is_refused(catalog):
    with pytest.raises(CommandOutOfLimits) as e:
        catalog.check_command(0, 1, 200, 50, value=999.0)
    assert str(e.value).startswith("value 999.0 above max 120 of TR1 voltage setpoint (CA 1 IOA 200)")
    with pytest.raises(CommandOutOfLimits, match="value 50 below min 100 of TR1 voltage setpoint"):
        catalog.check_command(0, 1, 200, 63, value=50)      # the time-tagged variant too
    with pytest.raises(CommandOutOfLimits, match="below min 0 of Power limit"):
        catalog.check_command(0, 1, 201, 49, value=-1)
    with pytest.raises(CommandOutOfLimits, match="above max 50 of Ramp"):
        catalog.check_command(0, 1, 202, 50, value=50.5)
    for bad in (math.nan, math.inf, "abc"):                 # NaN compares false with every limit
        with pytest.raises(InvalidRequestError):
            catalog.check_command(0, 1, 200, 50, value=bad)
    assert issubclass(CommandOutOfLimits, CommandNotAllowed)
    assert issubclass(CommandOutOfLimits, InvalidRequestError)


def test_a_value_within_the_limits_or_without_limits_passes(catalog):
    catalog.check_command(0, 1, 200, 50, value=100)
    catalog.check_command(0, 1, 200, 50, value=120.0)
    catalog.check_command(0, 1, 200, 50)                    # no value: the address and type only
    catalog.check_command(0, 1, 201, 49, value=30000)
    catalog.check_command(0, 1, 202, 50, value=-1e6)
    catalog.check_command(0, 1, 203, 50, value=1e30)
    catalog.check_command(0, 1, 200, 50, value=999.0, allow_unlisted=True)


def test_a_command_type_other_than_the_listed_one_is_refused(catalog):
    with pytest.raises(CommandNotAllowed, match="C_SE_NB_1"):
        catalog.check_command(0, 1, 200, 49, value=110)     # scaled to a float setpoint
    with pytest.raises(CommandNotAllowed):
        catalog.check_command(0, 1, 200, 45, value=1)


def test_every_command_row_of_an_ioa_counts(catalog):
    catalog.check_command(0, 1, 5, 45, value=1)             # first row at IOA 5
    catalog.check_command(0, 1, 5, 47, value=2)             # second row at IOA 5


def test_a_row_for_another_station_does_not_allow_a_command(catalog):
    catalog.check_command(1, 1, 300, 50, value=5)
    with pytest.raises(CommandOutOfLimits):
        catalog.check_command(1, 1, 300, 50, value=11)
    with pytest.raises(CommandNotAllowed):
        catalog.check_command(0, 1, 300, 50, value=5)


# ---- end to end: nothing reaches the RTU -----------------------------------------------------

async def test_a_command_that_does_not_fit_never_reaches_the_rtu():
    async with iec104.Outstation(stations=1, points=20) as out, \
            iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port)
        for ca, ioa, type, value in ((65537, 2, "C_SC_NA_1", 1), (-1, 2, "C_SC_NA_1", 1),
                                     (65535, 2, "C_SC_NA_1", 1), (0, 2, "C_SC_NA_1", 1),
                                     (1, 1 << 24, "C_SC_NA_1", 1), (1, 2, "C_SE_NC_1", math.inf),
                                     (1, 2, "C_SE_NB_1", 40000)):
            with pytest.raises(InvalidRequestError):
                await rtu.command(ca, ioa, type, value, timeout=2)
        await rtu.command(1, 2, "C_SC_NA_1", 1, timeout=2)  # the link is still fine
        assert [(c["ca"], c["ioa"]) for c in out.commands] == [(1, 2)]


async def test_a_setpoint_above_the_point_list_max_never_reaches_the_rtu():
    points = sample_points()
    async with iec104.Outstation(point_list=points) as out, \
            iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port)
        m.import_points(points)
        with pytest.raises(CommandOutOfLimits, match="above max 120 of TR1 voltage setpoint"):
            await rtu.command(1, 200, "C_SE_NC_1", 999.0, timeout=2)
        assert out.commands == []
        await rtu.command(1, 200, "C_SE_NC_1", 115.0, timeout=2)
        assert [c["value"] for c in out.commands] == [115.0]


async def test_a_direct_execute_of_a_select_before_operate_point_never_reaches_the_rtu():
    """A point the list marks ``sbo`` (the breakers of the sample list) is operated by select
    then execute only: a direct execute is refused before it leaves, naming the point, as
    the RTU would refuse it (or, worse, operate it when its own setting differs)."""
    points = sample_points()
    async with iec104.Outstation(point_list=points) as out, \
            iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port)
        m.import_points(points)
        with pytest.raises(CommandNotAllowed, match=r"CB1 position.*select before operate"):
            await rtu.command(1, 1, "C_DC_NA_1", 2, timeout=2)
        assert out.commands == []
        await rtu.command(1, 1, "C_DC_NA_1", 2, select=True, timeout=2)
        assert [(c["select"], c["value"]) for c in out.commands] == [(True, 2), (False, 2)]


def test_only_a_point_listed_sbo_needs_the_select(catalog, tmp_path):
    catalog.check_command(0, 1, 5, 45, select=False)        # no sbo column: either way
    path = tmp_path / "sbo.csv"
    path.write_text("ca,ioa,name,type,command_type,sbo\n1,1,CB,M_DP_NA_1,C_DC_NA_1,yes\n"
                    "1,2,Tap,M_ST_NA_1,C_RC_NA_1,no\n1,3,Lamp,M_SP_NA_1,C_SC_NA_1,\n")
    cat = Catalog()
    cat.load(path)
    with pytest.raises(CommandNotAllowed, match="select before operate"):
        cat.check_command(0, 1, 1, 46, select=False)
    with pytest.raises(CommandNotAllowed, match="select before operate"):
        cat.check_command(0, 1, 1, 59, select=False)        # its time-tagged variant too
    cat.check_command(0, 1, 1, 46, select=True)
    cat.check_command(0, 1, 2, 47, select=False)
    cat.check_command(0, 1, 3, 45, select=False)


async def test_a_command_type_other_than_the_listed_one_never_reaches_the_rtu():
    points = sample_points()
    async with iec104.Outstation(point_list=points) as out, \
            iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port)
        m.import_points(points)
        with pytest.raises(CommandNotAllowed):
            await rtu.command(1, 200, "C_SE_NB_1", 110, timeout=2)
        assert out.commands == []


# ---- 4. the CLI ------------------------------------------------------------------------------

@pytest.fixture
def silent_rtu():
    """A TCP listener that never answers: a command that connected would wait for t0."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s
    s.close()


def _nobody_connected(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        s.accept()[0].close()
    except BlockingIOError:
        return True
    return False


@pytest.mark.parametrize("args, says", [
    (["--ca", "1", "--ioa", "-5", "--type", "C_SC_NA_1", "--value", "1"], "--ioa: -5"),
    (["--ca", "1", "--ioa", "5", "--type", "C_SE_NC_1", "--value", "inf"], "inf"),
    (["--ca", "1", "--ioa", "5", "--type", "C_SE_NC_1", "--value", "nan"], "nan"),
    (["--ca", "70000", "--ioa", "5", "--type", "C_SC_NA_1", "--value", "1"], "--ca: 70000"),
    (["--ca", "0", "--ioa", "5", "--type", "C_SC_NA_1", "--value", "1"], "CA 0"),
    (["--ca", "65535", "--ioa", "5", "--type", "C_SC_NA_1", "--value", "1"], "broadcast"),
    (["--ca", "300", "--ioa", "5", "--type", "C_SC_NA_1", "--value", "1", "--ca-size", "1"],
     "CA 300"),
    (["--ca", "1", "--ioa", "5", "--type", "C_XX_NA_1", "--value", "1"], "C_XX_NA_1"),
    (["--ca", "1", "--ioa", "5", "--type", "M_SP_NA_1", "--value", "1"], "M_SP_NA_1"),
    (["--ca", "1", "--ioa", "5", "--type", "C_SC_NA_1", "--value", "3"], "single"),
    (["--ca", "1", "--ioa", "5", "--type", "C_SC_NA_1", "--value", "1", "--qualifier", "40"],
     "QU"),
])
def test_cli_refuses_bad_input_in_one_line_before_connecting(silent_rtu, capsys, args, says):
    port = silent_rtu.getsockname()[1]
    t0 = time.monotonic()
    code = main(["command", f"127.0.0.1:{port}", *args, "--t0", "3", "--timeout", "2"])
    took = time.monotonic() - t0
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert took < 1.5
    assert _nobody_connected(silent_rtu)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert says in err


@pytest.mark.parametrize("qrp", [1.5, 2.9, True, "1"])
async def test_reset_process_refuses_a_qrp_that_is_not_an_integer(qrp):
    """QRP must be an integer: 1.5 or True would go out as a general reset, 2.9 as QRP 2;
    each is an InvalidRequestError, and nothing is sent."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await master.connect("127.0.0.1", peer.port, gi_on_start=False)
        with pytest.raises(InvalidRequestError):
            await rtu.reset_process(1, qrp, timeout=0.1)
        await round_trips(rtu)
        assert peer.received(fmt=0, type_id=105) == []


@pytest.mark.parametrize("tsc", [1.5, "1"])
async def test_test_command_refuses_a_tsc_that_is_not_an_integer(tsc):
    """TSC must be an integer 0..65535, refused with InvalidRequestError before sending."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await master.connect("127.0.0.1", peer.port, gi_on_start=False)
        with pytest.raises(InvalidRequestError):
            await rtu.test_command(1, tsc=tsc, timeout=0.1)
        await round_trips(rtu)
        assert peer.received(fmt=0, type_id=107) == []


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "5", True])
async def test_a_timeout_that_is_not_a_positive_number_is_refused_before_sending(timeout):
    """0 used to mean the default (10 s); a negative or NaN timeout gave the command up as it
    left (in doubt, maybe executed): each is an InvalidRequestError, nothing sent."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await master.connect("127.0.0.1", peer.port, gi_on_start=False)
        for request in (rtu.command(1, 100, "C_SC_NA_1", 1, timeout=timeout),
                        rtu.interrogate(1, timeout=timeout), rtu.read(1, 100, timeout=timeout),
                        rtu.clock_sync(1, timeout=timeout)):
            with pytest.raises(InvalidRequestError, match="timeout"):
                await request
        await round_trips(rtu)
        assert [f for f, _ in peer.received(fmt=0)] == []


# ---- 5. select before operate: no armed select left behind -----------------------------------

def sbo_frames(peer, conn=None):
    """The C_SC_NA_1 I-frames the peer received: (COT, S/E set, state on)."""
    return [(int(f["cot"]), bool(raw[-1] & 0x80), bool(raw[-1] & 1))
            for f, raw in peer.received(conn, fmt=0, type_id=45)]


def breaks_logged(caplog):
    return [r.getMessage() for r in caplog.records if "break" in r.getMessage()]


@pytest.mark.parametrize("give_up", ["timeout", "cancel", "lost"])
async def test_a_confirmed_select_whose_execute_never_left_is_broken(give_up, caplog):
    """The k window is full (a read and the select unacknowledged): the execute waits in the
    queue and is withdrawn when the caller gives up, and the select the RTU confirmed is
    broken (the same command, COT 8) once the window opens; with the link lost nothing can
    be sent, on that connection or the next."""
    async with ScriptedPeer() as peer, \
            iec104.Master(k=2, w=1, backoff_min=0.05, backoff_max=0.1) as master:
        rtu = await master.connect("127.0.0.1", peer.port, gi_on_start=False)
        blocker = asyncio.ensure_future(rtu.read(1, 5, timeout=5))
        await wait_for(lambda: len(peer.received(fmt=0)) == 1)
        t0 = time.monotonic()
        task = asyncio.ensure_future(rtu.command(1, 100, "C_SC_NA_1", 1, select=True,
                                                 timeout=0.3))
        await wait_for(lambda: len(sbo_frames(peer)) == 1)
        c = peer.conn
        peer.send(raw_i_frame(sc(7, select=True), c["vs"], 0))   # its ActCon, acking nothing
        c["vs"] += 1
        await round_trips(rtu)                                      # the execute is queued
        if give_up == "cancel":
            task.cancel()
        elif give_up == "lost":
            c["writer"].close()
        error = {"timeout": ConfirmationTimeout, "cancel": asyncio.CancelledError,
                 "lost": ConnectionLostError}[give_up]
        with pytest.raises(error):
            await task
        assert time.monotonic() - t0 < 0.3 + 0.5                  # the break made it no longer
        if give_up == "lost":
            await wait_for(lambda: len(peer.connections) == 2 and rtu.data_transfer == "started")
            await round_trips(rtu)
            assert sbo_frames(peer, c) == [(6, True, True)] and sbo_frames(peer) == []
        else:
            peer.send(s_frame(2))                                   # the window opens
            await wait_for(lambda: len(sbo_frames(peer)) == 2)
            assert sbo_frames(peer) == [(6, True, True), (8, True, True)]   # the break only
            peer.send_i(sc(9, select=True))                         # its DeactCon
            await round_trips(rtu)
            assert sbo_frames(peer) == [(6, True, True), (8, True, True)]
            assert rtu.status()["unmatched_answers"] == 0 and rtu.status()["in_doubt"] == 0
            assert breaks_logged(caplog) == []
        blocker.cancel()


async def test_a_select_whose_execute_left_is_not_broken():
    """The execute left: it is in doubt (the RTU may have run it), and nothing follows it."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await master.connect("127.0.0.1", peer.port, gi_on_start=False)
        task = asyncio.ensure_future(rtu.command(1, 100, "C_SC_NA_1", 1, select=True,
                                                 timeout=0.3))
        await wait_for(lambda: len(sbo_frames(peer)) == 1)
        peer.send_i(sc(7, select=True))
        with pytest.raises(ConfirmationTimeout):
            await task
        await round_trips(rtu)
        assert sbo_frames(peer) == [(6, True, True), (6, False, True)]
        assert rtu.status()["in_doubt"] == 1


@pytest.mark.parametrize("answer", ["positive", "negative", "none"])
async def test_a_select_whose_actcon_timed_out_is_broken_and_stays_in_doubt(answer, caplog):
    """The RTU may have armed a select whose ActCon did not come in time: it is broken at
    once, in the background; the select stays in doubt until its own late answer. A break
    refused or unanswered within the session's request_timeout is logged."""
    async with ScriptedPeer() as peer, iec104.Master(request_timeout=0.5) as master:
        rtu = await master.connect("127.0.0.1", peer.port, gi_on_start=False)
        with pytest.raises(ConfirmationTimeout):
            await rtu.command(1, 100, "C_SC_NA_1", 1, select=True, timeout=0.2)
        await wait_for(lambda: len(sbo_frames(peer)) == 2)
        assert sbo_frames(peer) == [(6, True, True), (8, True, True)]
        with pytest.raises(CommandInDoubt):
            await rtu.command(1, 100, "C_SC_NA_1", 1, select=True, timeout=0.2)
        peer.send_i(sc(7, select=True))                             # the select's, late
        if answer != "none":
            peer.send_i(sc(9, select=True, negative=answer == "negative"))
        await wait_for(lambda: rtu.status()["late_answers"] == 1)
        await round_trips(rtu)
        assert rtu.status()["unmatched_answers"] == 0 and rtu.status()["in_doubt"] == 0
        if answer == "positive":
            assert breaks_logged(caplog) == []
        else:
            await wait_for(lambda: breaks_logged(caplog), 2)
            assert ("refused" if answer == "negative" else "not answered") in breaks_logged(caplog)[0]
        assert sbo_frames(peer) == [(6, True, True), (8, True, True)]   # never an execute


def cancel_at_select_actcon(rtu, task):
    """Cancel ``task`` (a command) when its select's ActCon arrives, before its execute can
    leave: the receive hooks run before the answers are matched."""
    def hook(data):
        f = decode_frames(data)
        if ((f["format"] == 0) & (f["cot"] == 7)).any():
            task().cancel()
    rtu.on_receive.append(hook)


async def test_the_simulator_breaks_the_select_of_a_command_cancelled_at_its_actcon(caplog):
    async with iec104.Outstation(stations=1, points=20) as out, \
            iec104.Master(gi_on_start=False) as m:                # IOA 2: a single command
        rtu = await m.connect("127.0.0.1", out.port)
        task = asyncio.ensure_future(rtu.command(1, 2, "C_SC_NA_1", 1, select=True, timeout=2))
        cancel_at_select_actcon(rtu, lambda: task)
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for(lambda: len(out.commands) == 2)
        await round_trips(rtu)
        assert [(c["cot"], c["result"]) for c in out.commands] == [(6, "selected"),
                                                                   (8, "select broken")]
        assert rtu.status()["unmatched_answers"] == 0 and breaks_logged(caplog) == []


@pytest.mark.interop
async def test_c104_takes_a_break_for_a_select_and_gets_no_more_breaks(caplog):
    """c104 (2.2.1) answers a select sent with COT 8 with an ActCon: it selects again (and
    restarts its select timeout) rather than breaking. The break executes nothing there;
    the session learns it and breaks no later select of that RTU."""
    from c104_peer import C104Outstation
    with C104Outstation(stations=1, points=1) as c104_out:
        async with iec104.Master(gi_on_start=False) as m:
            rtu = await m.connect("127.0.0.1", c104_out.port)
            for n in (1, 2):                                      # IOA 5002: select first
                sent = []
                rtu.on_send.append(sent.append)
                task = asyncio.ensure_future(rtu.command(1, 5002, "C_SC_NA_1", 1, select=True,
                                                         timeout=5))
                cancel_at_select_actcon(rtu, lambda: task)
                with pytest.raises(asyncio.CancelledError):
                    await task
                await round_trips(rtu)
                rtu.on_receive.clear()
                rtu.on_send.clear()
                cots = [int(f["cot"]) for f in decode_frames(b"".join(sent)) if f["format"] == 0]
                assert cots == ([6, 8] if n == 1 else [6])
            assert "answered as a new select" in breaks_logged(caplog)[0]
            assert len(breaks_logged(caplog)) == 1
            assert c104_out.received == []                        # nothing executed
            assert (await rtu.command(1, 5002, "C_SC_NA_1", 1, select=True, timeout=5)).ioa == 5002
