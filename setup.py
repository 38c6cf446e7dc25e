"""Build the Cython extensions of ext/ into the iec104 package.

Every ext/<name>.pyx becomes iec104._<name>.  IEC104_DEBUG=1 builds with line tracing
and writes Cython's annotated HTML; IEC104_ONLY=name1,name2 builds a subset (for quick
iteration on one extension).
"""
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
DEBUG = os.environ.get("IEC104_DEBUG") == "1"
ONLY = {n for n in os.environ.get("IEC104_ONLY", "").split(",") if n}

SOURCES = sorted((HERE / "ext").glob("*.pyx"))
if not SOURCES:
    # an sdist without ext/ (a MANIFEST.in that lost it) would otherwise build a py3-none-any
    # wheel without the codec, which fails only at `import iec104`
    sys.exit(f"setup.py: no Cython sources in {HERE / 'ext'} (ext/*.pyx): iec104 cannot be "
             "built without them; build from a git checkout or a complete sdist")
unknown = ONLY - {p.stem for p in SOURCES}
if unknown:
    sys.exit(f"setup.py: IEC104_ONLY={','.join(sorted(unknown))}: no such extension "
             f"(ext/ has {', '.join(p.stem for p in SOURCES)})")

macros = [("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
if sys.platform == "win32":                     # MSVC
    cflags = ["/Od", "/Zi"] if DEBUG else ["/O2"]
else:
    cflags = ["-O0", "-g"] if DEBUG else ["-O3"]
ldflags = []
cython_dir = "build/cython"

# IEC104_FUZZ=1 (make fuzz): clang with libFuzzer's coverage callbacks and ASan, so that
# atheris steers by the C code's edges too; built with --build-lib build/fuzz, never over the
# .so files in src/iec104. IEC104_FUZZ_SANITIZE overrides the -fsanitize= list.
if os.environ.get("IEC104_FUZZ") == "1":
    sanitize = "-fsanitize=" + os.environ.get("IEC104_FUZZ_SANITIZE", "address,fuzzer-no-link")
    os.environ["CC"] = os.environ.get("IEC104_FUZZ_CC", "clang")
    cflags = ["-O1", "-g", "-fno-omit-frame-pointer", sanitize]
    ldflags = [sanitize]
    cython_dir = "build/fuzz/cython"

extensions = [
    Extension(
        f"iec104._{pyx.stem}",
        [pyx.relative_to(HERE).as_posix()],
        include_dirs=["ext"],
        define_macros=macros,
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )
    for pyx in SOURCES
    if not ONLY or pyx.stem in ONLY
]


class cythonize_then_build_ext(build_ext):
    """Cython runs when the extensions are built, not for an sdist or the metadata."""

    def finalize_options(self):
        from Cython.Build import cythonize
        self.distribution.ext_modules = cythonize(
            self.distribution.ext_modules,
            include_path=["ext"],
            build_dir=cython_dir,
            annotate=DEBUG,
            language_level=3,
            compiler_directives={
                "boundscheck": False,
                "wraparound": False,
                "cdivision": True,
                "initializedcheck": False,
                "linetrace": DEBUG,
                "embedsignature": True,
            },
        )
        super().finalize_options()
        if self.parallel is None:               # one compiler per core (they are big C files)
            self.parallel = os.cpu_count() or 1


setup(ext_modules=extensions, cmdclass={"build_ext": cythonize_then_build_ext})
