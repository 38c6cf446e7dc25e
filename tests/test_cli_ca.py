"""--ca and --standby on poll/watch (--ca on export), and ca / standby in target files: the GI
per listed CA at the simulator, a redundancy group polled, each bad input one line and exit
code 1, no option taken for the start of another."""
import polars as pl
import pytest

from iec104.cli import _parser, _session_settings, main
from iec104.types import TypeID

from test_cli import Sim


def _seen(sim) -> list[tuple[int, int]]:
    """(type id, CA) of every request the simulator (in its thread) receives."""
    seen: list[tuple[int, int]] = []
    handle = sim.out._request

    def request(conn, f, raw, rows):
        seen.append((int(f["type_id"]), int(f["ca"])))
        handle(conn, f, raw, rows)
    sim.out._request = request
    return seen


def test_ca_is_repeatable_or_a_comma_list_and_commands_keep_theirs():
    args = _parser().parse_args(["poll", "h", "--ca", "1,2", "--ca", "7"])
    assert _session_settings(args)["ca"] == (1, 2, 7)
    assert "ca" not in _session_settings(_parser().parse_args(["poll", "h"]))
    cmd = _parser().parse_args(["command", "h", "--ca", "5", "--ioa", "1", "--type", "45",
                                "--value", "1"])
    assert "ca" not in _session_settings(cmd)       # the command's address, not the session's


def test_poll_interrogates_each_ca_given(tmp_path, capsys):
    with Sim(stations=2, points=5) as sim:
        seen = _seen(sim)
        code = main(["poll", f"127.0.0.1:{sim.out.port}", "--ca", "2", "--duration", "0.5"])
    assert code == 0
    assert seen == [(TypeID.C_IC_NA_1, 2)]          # not the broadcast, not CA 1


def test_a_target_file_sets_ca_and_standby(tmp_path, capsys):
    with Sim(stations=2, points=5, standby_ports=[0]) as sim:
        first, second = sim.out.ports
        toml = tmp_path / "rtus.toml"
        toml.write_text(f'[[rtu]]\nhost = "127.0.0.1"\nport = {first}\nname = "ss7"\n'
                        f'ca = [1, 2]\nstandby = ["127.0.0.1:{second}"]\n')
        seen = _seen(sim)
        code = main(["poll", str(toml), "--duration", "0.5", "--json"])
    assert code == 0
    # the group's own GI after an activation is still broadcast (iec104.redundancy)
    assert {(TypeID.C_IC_NA_1, 1), (TypeID.C_IC_NA_1, 2)} <= set(seen)
    assert f'"active": "127.0.0.1:{first}"' in capsys.readouterr().out


def test_standby_on_the_command_line_makes_a_group(capsys):
    with Sim(stations=1, points=5, standby_ports=[0]) as sim:
        first, second = sim.out.ports
        code = main(["poll", f"127.0.0.1:{first}", "--standby", f"127.0.0.1:{second}",
                     "--duration", "0.5", "--json"])
    assert code == 0
    out = capsys.readouterr().out
    assert f'"active": "127.0.0.1:{first}"' in out and '"switches": 0' in out


@pytest.mark.parametrize("argv, says", [
    (["poll", "h", "--ca", "0"], "ca 0"),
    (["poll", "h", "--ca", "x"], "not an integer"),
    (["watch", "h", "--ca", "300", "--ca-size", "1"], "1..254"),
    (["poll", "h", "--ca", "1,1"], "twice"),
    (["poll", "h1", "h2", "--standby", "h3:2404"], "--standby"),
    (["poll", "h", "--standby", "h3:99999"], "99999"),
    (["watch", "h", "--standby", "h3:x"], "--standby"),
    (["poll", "h", "--standby", "h3:2404", "--workers", "2"], "--workers"),
])
def test_bad_ca_and_standby_are_one_line_and_exit_code_1(argv, says, capsys, tmp_path):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_bad_ca_or_standby_in_a_target_file(tmp_path, capsys):
    for line, says in (('ca = [70000]', "1..65534"), ('ca = ["x"]', "not an integer"),
                       ('standby = ["h:x"]', "standby")):
        toml = tmp_path / "rtus.toml"
        toml.write_text(f'[[rtu]]\nhost = "127.0.0.1"\n{line}\n')
        assert main(["poll", str(toml)]) == 1
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err


def test_export_interrogates_the_stations_of_ca_or_of_the_target_file(tmp_path):
    # an RTU that does not answer a broadcast GI is exported by its stations' addresses
    with Sim(stations=3, points=4) as sim:
        target = f"127.0.0.1:{sim.out.port}"
        assert main(["export", target, "--ca", "2", "-o", str(tmp_path / "a.csv")]) == 0
        toml = tmp_path / "rtus.toml"
        toml.write_text(f'[[rtu]]\nhost = "127.0.0.1"\nport = {sim.out.port}\nca = [1, 3]\n')
        assert main(["export", str(toml), "-o", str(tmp_path / "b.csv")]) == 0
    assert set(pl.read_csv(tmp_path / "a.csv")["ca"]) == {2}
    assert set(pl.read_csv(tmp_path / "b.csv")["ca"]) == {1, 3}


def test_an_option_is_never_taken_for_the_start_of_another(capsys):
    # argparse took `export --ca 1` for --ca-size 1 (the frames then decoded with a 1-octet
    # CA), --cot 1 for --cot-size 1
    for argv in (["export", "127.0.0.1", "--cot", "1", "-o", "x.csv"],
                 ["poll", "127.0.0.1", "--gi", "5"], ["simulate", "--point", "p.csv"]):
        assert main(argv) == 1
        assert "unrecognized arguments" in capsys.readouterr().err
    assert _parser().parse_args(["poll", "h", "--ca", "1"]).cas == [[1]]   # its own --ca
