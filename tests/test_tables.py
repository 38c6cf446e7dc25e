"""One table per fact: type families, time-tagged variants, link defaults and the version are
written once; everything else takes them from there, and the C copies agree."""
import ast
import inspect
import re
from pathlib import Path

import numpy as np

import iec104
from iec104 import types as T
from iec104._store import LatestTable
from iec104.link import LinkConfig
from iec104.outstation import Outstation
from iec104.settings import SessionSettings

ROOT = Path(__file__).parents[1]
SRC = ROOT / "src" / "iec104"
CP56_TYPES = [t for t in T.TypeID if 30 <= t <= 40 or 58 <= t <= 64 or t == 107]


def _c_type_family() -> dict[int, int]:
    """ext/apdu.pxd's family table, read from its source: {type: family} for the types it
    maps elsewhere (every other type is its own family)."""
    pxd = (ROOT / "ext" / "apdu.pxd").read_text()
    body = re.search(r"iec104_family\[256\] = \{(.*?)\};", pxd, re.S)
    assert body, "iec104_family not found in ext/apdu.pxd"
    return {int(t): int(f) for t, f in re.findall(r"\[(\d+)\] = (\d+)", body.group(1))}


def _pxd_family_entries() -> str:
    """The entries of ext/apdu.pxd's iec104_family as family_of gives them, to paste there."""
    pairs = [f"[{t}] = {T.family_of(t)}," for t in range(256) if T.family_of(t) != t]
    return "\n".join(" " * 8 + " ".join(pairs[i:i + 8]) for i in range(0, len(pairs), 8))


def test_the_store_keeps_every_monitor_type_under_its_python_family():
    # the C table as the store applies it: one row per wire type 1..44, each at its own IOA
    types = np.arange(1, 45)
    pts = np.zeros(len(types), T.POINT_DTYPE)
    pts["type_id"], pts["ca"], pts["ioa"] = types, 1, types
    table = LatestTable()
    table.update(pts)
    snap = table.snapshot()
    assert len(snap["ioa"]) == len(types)
    got = dict(zip(snap["ioa"].tolist(), snap["family"].tolist()))
    assert got == {int(t): T.family_of(int(t)) for t in types}
    assert T.family_of(30) == T.family_of(2) == 1 and T.family_of(21) == 9


def test_c_and_python_families_agree_for_every_type_id():
    c = _c_type_family()
    assert all(0 < f < 256 for f in c.values())         # 0 in the C table means "itself"
    wrong = [t for t in range(256) if c.get(t, t) != T.family_of(t)]
    assert not wrong, (f"ext/apdu.pxd's iec104_family differs from types.family_of for {wrong}; "
                       f"its entries should read:\n{_pxd_family_entries()}")


def test_command_types_join_their_plain_types():
    assert [T.family_of(t) for t in range(58, 65)] == list(range(45, 52))
    assert T.family_of(107) == 104


def test_cp56_variant_is_the_inverse_of_the_families_over_every_cp56_type():
    assert T.CP56_VARIANT == {T.family_of(t): int(t) for t in CP56_TYPES}


def test_families_and_variants_only_name_standard_types():
    standard = {int(t) for t in T.TypeID}
    assert {T.family_of(t) for t in standard} <= standard
    assert set(T.CP56_VARIANT) | set(T.CP56_VARIANT.values()) <= standard


def _defaults_in_source(path: Path, owner: str, names) -> dict[str, str]:
    """The source text of the defaults of ``names`` in class ``owner`` (dataclass fields) or
    in its ``__init__``'s keywords."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == owner)
    out = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and node.target.id in names:
            out[node.target.id] = ast.unparse(node.value)
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            args = node.args
            for a, d in zip(args.kwonlyargs, args.kw_defaults):
                if a.arg in names and d is not None:
                    out[a.arg] = ast.unparse(d)
    return out


def test_link_defaults_are_written_once_in_link_config():
    names = ("t0", "t1", "t2", "t3", "k", "w")
    settings = _defaults_in_source(SRC / "settings.py", "SessionSettings", names)
    assert settings == {n: f"LinkConfig.{n}" for n in names}
    simulator = _defaults_in_source(SRC / "outstation.py", "Outstation", names)
    assert simulator == {n: f"LinkConfig.{n}" for n in names if n != "t0"}
    # and so the values agree
    sig = inspect.signature(Outstation)
    for n in names:
        assert getattr(SessionSettings(), n) == getattr(LinkConfig(), n)
        if n != "t0":
            assert sig.parameters[n].default == getattr(LinkConfig(), n)


def test_the_simulator_command_takes_its_windows_from_link_config():
    from iec104.cli import _parser
    args = _parser().parse_args(["simulate"])
    assert (args.k, args.w) == (LinkConfig.k, LinkConfig.w)
    assert re.findall(r'"--[kw]", .*?default=([\w.]+)', (SRC / "cli.py").read_text()) == \
        ["LinkConfig.k", "LinkConfig.w"]


def test_the_version_is_written_once():
    hits = [p for p in SRC.rglob("*.py") if re.search(r"\b0\.1\.0\b|__version__ =", p.read_text())]
    assert hits == [SRC / "__init__.py"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", iec104.__version__)


def test_every_test_file_a_source_cites_exists():
    for path in [*SRC.glob("*.py"), *(ROOT / "ext").glob("*.p*")]:
        for cited in re.findall(r"tests/[\w/]+\.py", path.read_text()):
            assert (ROOT / cited).exists(), f"{path.name} cites {cited}"
