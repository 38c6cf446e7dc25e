"""The iec104 command's input checks and exit codes: each bad input is one line on stderr, no
traceback, exit code 1 (input error), found before connecting or listening."""
import os
import time

import polars as pl
import pytest

from iec104.cli import main

from test_cli import Sim

DOWN = "127.0.0.1:1"            # nothing listens there: an input error must be found first


def one_line(capsys) -> str:
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert "Traceback" not in cap.err and "Traceback" not in cap.out
    assert err and len(err.splitlines()) == 1, cap.err
    assert "listening" not in cap.out                # nothing started
    return err


@pytest.mark.parametrize("argv, says", [
    (["simulate", "--port", "70000"], "port"),
    (["simulate", "--port", "-1"], "port"),
    (["simulate", "--stations", "0"], "stations"),
    (["simulate", "--rate", "-5"], "rate"),
    (["simulate", "--rate", "nan"], "rate"),
    (["simulate", "--points", "-3"], "points"),
    (["simulate", "--duration", "-1"], "duration"),
    (["simulate", "--k", "0"], "k"),
    (["command", DOWN, "--ca", "70000", "--ioa", "1", "--type", "C_SC_NA_1", "--value", "1"], "ca"),
    (["command", DOWN, "--ca", "1", "--ioa", "16777216", "--type", "C_SC_NA_1", "--value", "1"], "ioa"),
    (["command", DOWN, "--ca", "1", "--ioa", "-1", "--type", "C_SC_NA_1", "--value", "1"], "ioa"),
    (["command", DOWN, "--ca", "1", "--ioa", "1", "--type", "45", "--value", "1", "--timeout", "0"],
     "timeout"),
    (["poll", "127.0.0.1:70000", "--duration", "1"], "70000"),
    (["poll", DOWN, "--duration", "-2"], "duration"),
    (["poll", DOWN, "--t1", "-1", "--duration", "1"], "t1"),
    (["export", DOWN, "-o", "x.txt"], ".txt"),
    (["decode", "x.pcap", "-o", "o.parquet", "--port", "99999"], "port"),
    (["pol", DOWN], "pol"),                              # a typo
    (["poll"], "TARGET"),                                # a missing argument
    (["simulate", "--port", "x"], "port"),
    (["poll", DOWN, "--nope"], "--nope"),
])
def test_bad_input_is_one_line_and_exit_code_1(argv, says, capsys):
    if argv[0] == "simulate":
        argv = [*argv, "--duration", "0.2"] if "--duration" not in argv else argv
    t = time.monotonic()
    assert main(argv) == 1
    err = one_line(capsys)
    assert says.lower() in err.lower(), err
    assert "refused" not in err.lower()
    assert time.monotonic() - t < 2                     # found before connecting or listening


def test_a_missing_toml_target_is_said_missing_not_taken_for_a_host(tmp_path, capsys):
    missing = tmp_path / "rtus.toml"
    assert main(["poll", str(missing), "--duration", "1"]) == 1
    err = one_line(capsys)
    assert str(missing) in err and "does not exist" in err


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "rtus.toml"
    bad.write_text('[[rtu]]\nhost = "10.0.0.7"\nport = \n')
    assert main(["poll", str(bad), "--duration", "1"]) == 1
    err = one_line(capsys)
    assert str(bad) in err and "line 3" in err


def test_a_bad_point_list_is_an_input_error_everywhere(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("ioa\n1\nfoo\n")
    assert main(["import", str(bad)]) == 1
    assert "row 2" in one_line(capsys)
    assert main(["import", str(tmp_path / "points.txt")]) == 1
    one_line(capsys)
    t = time.monotonic()
    assert main(["poll", DOWN, "--points", str(bad), "--duration", "1"]) == 1
    assert "row 2" in one_line(capsys) and time.monotonic() - t < 2     # before connecting
    assert main(["export", DOWN, "-o", str(tmp_path / "s.csv"), "--points", str(bad)]) == 1
    assert "row 2" in one_line(capsys)


def test_export_xlsx_and_files_follow_the_umask(tmp_path):
    pytest.importorskip("xlsxwriter")
    old = os.umask(0o022)
    try:
        with Sim(stations=1, points=10) as sim:
            assert main(["export", f"127.0.0.1:{sim.out.port}", "-o", str(tmp_path / "s.xlsx")]) == 0
            assert main(["export", f"127.0.0.1:{sim.out.port}", "-o", str(tmp_path / "s.csv")]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "s.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "s.xlsx").stat().st_mode & 0o777 == 0o644
    pytest.importorskip("fastexcel")
    assert len(pl.read_excel(tmp_path / "s.xlsx")) == 9            # 10 points less a counter


def test_verbose_shows_the_sessions_life(capsys):
    with Sim(stations=1, points=5) as sim:
        assert main(["-v", "poll", f"127.0.0.1:{sim.out.port}", "--duration", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "connected" in err and "interrogation" in err and "closed" in err
    with Sim(stations=1, points=5) as sim:
        assert main(["-vv", "poll", f"127.0.0.1:{sim.out.port}", "--duration", "0.5"]) == 0
    assert "DEBUG" in capsys.readouterr().err


def test_a_numeric_command_type_is_taken(capsys):
    with Sim(stations=1, points=20) as sim:
        assert main(["command", f"127.0.0.1:{sim.out.port}", "--ca", "1", "--ioa", "2", "--type",
                     "45", "--value", "1"]) == 0
    assert "confirmed" in capsys.readouterr().out


def test_one_rtu_commands_refuse_a_file_of_many(tmp_path, capsys):
    toml = tmp_path / "rtus.toml"
    toml.write_text('[[rtu]]\nhost = "127.0.0.1"\nport = 1\n[[rtu]]\nhost = "127.0.0.1"\nport = 2\n')
    assert main(["command", str(toml), "--ca", "1", "--ioa", "2", "--type", "45", "--value", "1"]) == 1
    assert "one RTU" in one_line(capsys)


def test_command_honours_the_point_list_of_its_target_file(tmp_path, capsys):
    """A command connects as poll and export do: the ``points`` list of its target file is in
    force, so a command to an IOA that the list does not have as a command point of that type
    is refused in one line (exit code 1) and nothing is sent to the RTU; one to a command
    point of the list is sent."""
    points = tmp_path / "points.csv"
    points.write_text("ioa,ca,type,command_type\n2,1,M_SP_NA_1,\n5,1,M_SP_NA_1,C_SC_NA_1\n")
    with Sim(stations=1, points=20) as sim:
        toml = tmp_path / "rtu.toml"
        toml.write_text(f'[[rtu]]\nhost = "127.0.0.1"\nport = {sim.out.port}\n'
                        f'points = "{points}"\n')
        argv = ["command", str(toml), "--ca", "1", "--type", "C_SC_NA_1", "--value", "1",
                "--timeout", "2"]
        assert main(argv + ["--ioa", "2"]) == 1
        err = capsys.readouterr().err.strip()
        assert not sim.out.commands, f"sent to the RTU: {sim.out.commands}"
        assert "Traceback" not in err and len(err.splitlines()) == 1
        assert "IOA 2" in err and "not a C_SC_NA_1 command point" in err
        # the library's keyword is no switch of the command line: it says where to list it
        assert "allow_unlisted" not in err and str(points) in err
        main(argv + ["--ioa", "5"])                 # listed: sent (the simulator has no IOA 5)
        assert [c["ioa"] for c in sim.out.commands] == [5]


def test_command_refusals_by_the_point_list_name_the_command_lines_ways(tmp_path, capsys):
    """A point listed select before operate needs --select (not the API's select=True); a
    value beyond the list's max is refused as such (listing the point is no remedy)."""
    points = tmp_path / "points.csv"
    points.write_text("ioa,ca,type,command_type,sbo,max\n5,1,M_SP_NA_1,C_SC_NA_1,yes,\n"
                      "6,1,M_ME_NC_1,C_SE_NC_1,,10\n")
    with Sim(stations=1, points=20) as sim:
        toml = tmp_path / "rtu.toml"
        toml.write_text(f'[[rtu]]\nhost = "127.0.0.1"\nport = {sim.out.port}\n'
                        f'points = "{points}"\n')
        base = ["command", str(toml), "--ca", "1", "--timeout", "2"]
        assert main(base + ["--ioa", "5", "--type", "C_SC_NA_1", "--value", "1"]) == 1
        err = capsys.readouterr().err.strip()
        assert "select before operate" in err and "--select" in err and "select=True" not in err
        assert main(base + ["--ioa", "6", "--type", "C_SE_NC_1", "--value", "11"]) == 1
        err = capsys.readouterr().err.strip()
        assert "above max 10" in err and "list it as a command point" not in err
        assert not sim.out.commands
        main(base + ["--ioa", "5", "--type", "C_SC_NA_1", "--value", "1", "--select"])
        assert [c["select"] for c in sim.out.commands] == [True]     # (it has no IOA 5)


@pytest.mark.parametrize("standby", [["127.0.0.1:1"], ["127.0.0.1:2", "127.0.0.1:2"]])
def test_a_standby_address_given_twice_is_refused(standby, capsys):
    """Each address of a redundancy group is one more connection to the RTU: the primary's
    address again, or one --standby twice, is an input error found before connecting."""
    argv = ["poll", DOWN, "--duration", "1"]
    for a in standby:
        argv += ["--standby", a]
    t = time.monotonic()
    assert main(argv) == 1
    err = one_line(capsys)
    assert f"--standby {standby[-1]}" in err and "twice" in err and "refused" not in err.lower()
    assert time.monotonic() - t < 2


@pytest.mark.parametrize("body, says", [
    ('[rtu]\nhost = "127.0.0.1"\nport = 1\n', "[[rtu]]"),          # [rtu] for [[rtu]]
    ('[[rtu]]\nhost = "127.0.0.1"\nport = [2404]\n', "port"),       # a port given as a list
])
def test_a_malformed_target_file_is_one_line_naming_the_file(tmp_path, capsys, body, says):
    """A table where an array of tables belongs, or a value of the wrong shape: one line
    naming the file (and its row), never Python's own AttributeError/TypeError."""
    toml = tmp_path / "rtus.toml"
    toml.write_text(body)
    assert main(["poll", str(toml), "--duration", "0.2"]) == 1
    err = one_line(capsys)
    assert "Error" not in err and str(toml) in err and says in err, err


def test_a_target_files_point_list_is_read_before_connecting(tmp_path, capsys):
    """A target's missing or bad ``points`` is exit code 1 with no connection made (poll,
    export, command and watch read it before connecting)."""
    with Sim(stations=1, points=10) as sim:
        toml = tmp_path / "rtus.toml"
        toml.write_text(f'[[rtu]]\nhost = "127.0.0.1"\nport = {sim.out.port}\n'
                        f'points = "{tmp_path / "nope.csv"}"\n')
        for argv in (["poll", str(toml), "--duration", "0.3"],
                     ["export", str(toml), "-o", str(tmp_path / "s.csv")],
                     ["command", str(toml), "--ca", "1", "--ioa", "1", "--type", "C_SC_NA_1",
                      "--value", "1"]):
            assert main(argv) == 1, argv
            assert "nope.csv" in one_line(capsys)
        connections = sim.out.stats().get("connections", 0)
    assert connections == 0


def test_a_relative_point_list_is_read_beside_its_target_file(tmp_path, monkeypatch):
    """`points = "points.csv"` in site/rtus.toml is site/points.csv, from any directory."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "points.csv").write_text("ioa,ca,type\n1,1,M_SP_NA_1\n")
    monkeypatch.chdir(tmp_path)
    with Sim(stations=1, points=10) as sim:
        (site / "rtus.toml").write_text(f'[[rtu]]\nhost = "127.0.0.1"\nport = {sim.out.port}\n'
                                        'points = "points.csv"\n')
        assert main(["poll", "site/rtus.toml", "--duration", "0.3"]) == 0


def test_duplicate_targets_are_refused_before_connecting(tmp_path, capsys):
    """The same host:port twice is one line and exit code 1, nothing connected (many RTUs
    allow one master only; the tables would show every row twice)."""
    with Sim(stations=1, points=10) as sim:
        toml = tmp_path / "rtus.toml"
        toml.write_text(f'[[rtu]]\nhost = "127.0.0.1"\nport = {sim.out.port}\n' * 2)
        code = main(["poll", str(toml), "--duration", "0.3"])
        connections = sim.out.stats().get("connections", 0)
    assert code == 1 and connections == 0, (code, connections)
    assert "given twice" in one_line(capsys)
