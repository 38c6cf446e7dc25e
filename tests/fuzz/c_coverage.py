"""C edges of the Cython extensions that a corpus reaches, counted by the instrumented build.

Replays the inputs of the given corpus directories once (libFuzzer ``-runs=0``) through
fuzz_codec.py on the extensions in build/fuzz (make fuzz builds them) with
``-print_coverage=1``, and sums libFuzzer's per-function edge counts per extension:

    .venv/bin/python tests/fuzz/c_coverage.py build/fuzz/corpus tests/fuzz/corpus

Use it to compare corpora, e.g. one grown with native coverage against one grown with
IEC104_FUZZ_LIB=none (Python coverage only) in the same time. The counts are libFuzzer's
instrumented edges (-fsanitize=fuzzer-no-link), Cython's generated glue included.
"""
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
LINE = re.compile(r"^(UN)?COVERED_FUNC: hits: \d+ edges: (\d+)/(\d+) (\S+) (\S+?):(\d+)")
# where the hot path is (the scanner, ASDU and element decoders are inlined into feed_c)
HOT = ["Decoder_feed_c", "Link__one", "Link__check_nr", "Link__receive_u", "Link_accept",
       "Channel_9received", "get_buffer", "LatestTable_update_c", "EventRing_append_c",
       "EventRing__grow_for", "write_element"]


def main(dirs):
    out = subprocess.run([sys.executable, str(HERE / "fuzz_codec.py"), *dirs, "-runs=0",
                          "-print_coverage=1"], capture_output=True, text=True)
    if "instrumented extensions" not in out.stderr:
        sys.exit("c_coverage: the instrumented build is not in use (make fuzz builds it)\n"
                 + out.stderr[-2000:])
    funcs = {}
    for line in out.stderr.splitlines():
        m = LINE.match(line)
        if m and m[5].endswith(".c") and "/build/fuzz/" in m[5]:
            funcs[(m[5], m[4], m[6])] = (int(m[2]), int(m[3]))
    per = defaultdict(lambda: [0, 0])
    for (path, _, _), (hit, total) in funcs.items():
        per[Path(path).stem][0] += hit
        per[Path(path).stem][1] += total
    inited = [l for l in out.stderr.splitlines() if "INITED" in l or "DONE" in l]
    print(inited[-1] if inited else "(no libFuzzer summary)")
    hit = sum(h for h, _ in per.values())
    total = sum(t for _, t in per.values())
    print(f"C edges reached: {hit} of {total} instrumented")
    for name, (h, t) in sorted(per.items()):
        print(f"  {name}.c: {h}/{t}")
    for key in HOT:
        rows = [(h, t, n) for (_, n, _), (h, t) in funcs.items() if key in n]
        for h, t, n in rows:
            print(f"  {n}: {h}/{t}")


if __name__ == "__main__":
    main(sys.argv[1:] or [str(HERE / "corpus")])
