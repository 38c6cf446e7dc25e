"""The package as it is built and installed: one version, an sdist that holds what the wheel is
built from, a setup.py that refuses to build without its extensions, optional extras that say
so when they are missing. (CI builds the sdist and a wheel from it for real: .ci/run.)"""
import ast
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path


import iec104

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def names(requirements) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_version_is_in_one_place_and_read_without_importing():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "iec104.__version__"}
    # setuptools reads it statically (no import of the compiled package at build time) when it
    # is a plain literal assignment
    tree = ast.parse((ROOT / "src/iec104/__init__.py").read_text())
    literal = [n.value.value for n in tree.body if isinstance(n, ast.Assign)
               and [getattr(t, "id", None) for t in n.targets] == ["__version__"]
               and isinstance(n.value, ast.Constant)]
    assert literal == [iec104.__version__]


def test_build_requirements_are_what_the_build_uses():
    requires = names(PYPROJECT["build-system"]["requires"])
    assert requires == {"setuptools", "cython"}
    cimports = [p.name for p in (ROOT / "ext").rglob("*.p[yx][xd]")
                if re.search(r"^\s*(cimport numpy|from numpy cimport)", p.read_text(), re.M)]
    assert cimports == [], "an extension cimports numpy: numpy is a build requirement again"


def test_optional_dependencies_are_extras_and_dev_has_them_all():
    core = names(PROJECT["dependencies"])
    assert {"textual", "fastexcel"}.isdisjoint(core)
    assert {"numpy", "polars", "rich"} <= core          # rich: the command's output
    extras = PROJECT["optional-dependencies"]
    assert "textual" in names(extras["tui"]) and "fastexcel" in names(extras["xlsx"])
    dev = extras["dev"]
    own = [re.fullmatch(r"iec104\[(.*)\]", r) for r in dev]
    assert [set(m.group(1).split(",")) for m in own if m] == [set(extras) - {"dev"}]
    assert any(re.fullmatch(r"pytest-asyncio>=1\.4(\.\d+)?", r) for r in dev)   # loop factories
    assert "build" in names(dev)
    if " -n " in (ROOT / "Makefile").read_text():          # make test runs in processes
        assert "pytest-xdist" in names(dev)


def test_the_sdist_manifest_holds_the_sources_stubs_and_data():
    from setuptools.command.egg_info import FileList
    files = FileList()
    files.allfiles = []
    for top, dirs, found in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", ".venv")]
        files.allfiles += [(Path(top) / f).relative_to(ROOT).as_posix() for f in found]
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            files.process_template_line(line)
    included = set(files.files)
    wanted = [p.relative_to(ROOT).as_posix() for pattern in
              ("ext/**/*.pyx", "ext/**/*.pxd", "src/iec104/*.pyi", "src/iec104/py.typed",
               "src/iec104/data/*", "tests/data/**/*.*", "tests/*.py")
              for p in ROOT.glob(pattern) if p.is_file()]
    wanted += ["LICENSE", "README.md", "pyproject.toml", "setup.py"]
    assert [w for w in wanted if w not in included] == []
    assert not [f for f in included if f.endswith((".so", ".pyd", ".c")) or f.startswith("build/")]


def test_every_compiled_module_has_a_stub_and_stubtest_checks_them_all():
    # setup.py makes iec104._<name> of every ext/<name>.pyx; .ci/run runs stubtest on every stub
    compiled = {f"_{p.stem}" for p in (ROOT / "ext").glob("*.pyx")}
    assert compiled == {p.stem for p in (ROOT / "src/iec104").glob("_*.pyi")}
    assert "*.pyi" in PYPROJECT["tool"]["setuptools"]["package-data"]["iec104"]   # in the wheel
    assert "mypy.stubtest --allowlist .ci/stubtest-allowlist.txt $stubs" in \
        (ROOT / ".ci/run").read_text()


def test_setup_py_refuses_to_build_without_the_cython_sources(tmp_path):
    (tmp_path / "setup.py").write_text((ROOT / "setup.py").read_text())
    (tmp_path / "ext").mkdir()
    proc = subprocess.run([sys.executable, "setup.py", "--name"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "no Cython sources" in proc.stderr and "ext/*.pyx" in proc.stderr


def test_the_license_is_mit():
    text = (ROOT / "LICENSE").read_text()
    assert PROJECT["license"] == "MIT" and text.startswith("MIT License")
    assert "Copyright (c) the iec104 authors" in text


def test_watch_without_textual_names_the_extra():
    code = ("import sys; sys.modules['textual'] = None\n"       # as if Textual were not installed
            "from iec104.cli import main\n"
            "sys.exit(main(['watch', '127.0.0.1:1']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: iec104 watch needs Textual, in the 'tui' extra: pip install 'iec104[tui]'"]


def test_the_cibuildwheel_test_command_passes_here():
    cibw = PYPROJECT["tool"]["cibuildwheel"]
    assert cibw["build"].split() == ["cp311-*", "cp312-*", "cp313-*"]
    assert cibw["linux"]["archs"] == ["x86_64", "aarch64"]
    argv = shlex.split(cibw["test-command"])
    assert argv[0] == "python"
    proc = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                          timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
