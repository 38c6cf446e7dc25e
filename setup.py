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

extensions = [
    Extension(
        f"iec104._{pyx.stem}",
        [pyx.relative_to(HERE).as_posix()],
        include_dirs=["ext"],
        define_macros=macros,
        extra_compile_args=cflags,
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
            build_dir="build/cython",
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
