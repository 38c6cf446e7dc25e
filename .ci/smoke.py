"""Smoke test of an installed iec104 (a wheel in a clean venv, no extras), run from outside
the source tree: the compiled codec decodes a known frame, a master interrogates the built-in
simulator, the `iec104` command runs its demo, and the missing extras say which they are."""
import importlib.metadata
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import iec104

t0 = time.monotonic()
where = Path(iec104.__file__).resolve().parent
assert "site-packages" in where.parts, f"iec104 imported from {where}, not from an installed wheel"
built = {p.name.split(".")[0] for p in where.iterdir() if p.suffix in (".so", ".pyd")}
assert {"_codec", "_encode", "_store"} <= built, f"compiled extensions missing: {sorted(built)}"
assert iec104.__version__ == importlib.metadata.version("iec104"), "two versions"

# 1. decode: an I-frame with one M_SP_NA_1 object (CA 1, IOA 100, on, spontaneous)
p = iec104.decode(bytes.fromhex("680e0000000001010300010064000001"))
assert len(p) == 1 and (int(p["type_id"][0]), int(p["cot"][0]), int(p["ca"][0]),
                        int(p["ioa"][0]), float(p["value"][0])) == (1, 3, 1, 100, 1.0), p


# 2. a general and a counter interrogation of the simulator
async def interrogate() -> int:
    async with iec104.Outstation(stations=2, points=50) as out:
        async with iec104.Master() as master:
            rtu = await master.connect("127.0.0.1", out.port, gi_on_start=False)
            n = await rtu.interrogate()                   # integrated totals: not in a GI
            n += await rtu.counter_interrogation()        # they answer this one
            assert n == len(out.image) == len(master.points()), (n, len(out.image))
            return n


n = iec104.run(interrogate())

# 3. the command with no arguments: the demo (packaged point list, Parquet export, rich tables)
exe = Path(sys.executable).with_name("iec104.exe" if sys.platform == "win32" else "iec104")
with tempfile.TemporaryDirectory() as tmp:
    demo = subprocess.run([str(exe)], cwd=tmp, capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "general interrogation" in demo.stdout and (Path(tmp) / "out/parameters.parquet").exists()

# 4. without the tui extra, `iec104 watch` says which extra it needs, in one line
if importlib.util.find_spec("textual") is None:
    watch = subprocess.run([str(exe), "watch", "127.0.0.1"], capture_output=True, text=True,
                           timeout=60)
    assert watch.returncode == 1 and "pip install 'iec104[tui]'" in watch.stderr, watch.stderr
    assert len(watch.stderr.strip().splitlines()) == 1, watch.stderr

print(f"smoke: iec104 {iec104.__version__} from {where}: decode ok, GI of {n} objects, demo ok "
      f"in {time.monotonic() - t0:.1f} s")
