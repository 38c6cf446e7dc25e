"""Build the Cython extensions of ext/ into the iec104 package.

Every ext/<name>.pyx becomes iec104._<name>.  IEC104_DEBUG=1 builds with line tracing
and writes Cython's annotated HTML; IEC104_ONLY=name1,name2 builds a subset (for quick
iteration on one extension).
"""
import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
DEBUG = os.environ.get("IEC104_DEBUG") == "1"
ONLY = {n for n in os.environ.get("IEC104_ONLY", "").split(",") if n}

macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if DEBUG:
    macros += [("CYTHON_TRACE_NOGIL", "1")]

extensions = [
    Extension(
        f"iec104._{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[numpy.get_include(), "ext"],
        define_macros=macros,
        extra_compile_args=["-O3"] if not DEBUG else ["-O0", "-g"],
    )
    for pyx in sorted((HERE / "ext").glob("*.pyx"))
    if not ONLY or pyx.stem in ONLY
]

setup(
    ext_modules=cythonize(
        extensions,
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
    ),
)
