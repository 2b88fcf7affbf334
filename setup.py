"""Build the Cython/OpenMP kernels in kernels/ as modules of cnnc._kernels.

Environment knobs:
  CNNC_NO_OPENMP=1     build without OpenMP (kernels run on one thread)
  CNNC_DEBUG_BUILD=1   Cython boundscheck/wraparound checks on, -O1 -g (for tests)
  CNNC_PORTABLE=1      no -march=native (the binary runs on any x86-64)
  CNNC_KERNELS=a,b     build only these kernel modules (development)
"""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
KERNELS = HERE / "kernels"


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _compiles(flags: list, source: str, run: bool = False) -> bool:
    """True when the C compiler accepts `flags` for `source` (and, if `run`, it runs)."""
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "probe.c", Path(tmp) / "probe"
        src.write_text(textwrap.dedent(source))
        try:
            done = subprocess.run([cc, *flags, str(src), "-o", str(exe)], capture_output=True)
            if done.returncode != 0:
                return False
            return not run or subprocess.run([str(exe)], capture_output=True).returncode == 0
        except OSError:
            return False


OPENMP_PROBE = """
#include <omp.h>
int main(void) { int n = 0;
#pragma omp parallel reduction(+:n)
  n += 1;
  return n >= 1 ? 0 : 1; }
"""


def _openmp_flags() -> list:
    if _flag("CNNC_NO_OPENMP"):
        print("cnnc: CNNC_NO_OPENMP set; building the kernels without OpenMP.")
        return []
    if _compiles(["-fopenmp"], OPENMP_PROBE, run=True):
        return ["-fopenmp"]
    bar = "*" * 72
    print(f"\n{bar}\ncnnc: WARNING: the C compiler cannot build OpenMP programs.\n"
          "The kernels will be built single-threaded. Install an OpenMP-capable\n"
          f"compiler (gcc, or clang with libomp) for multi-core speed.\n{bar}\n",
          file=sys.stderr)
    return []


def _native_flags() -> list:
    if _flag("CNNC_PORTABLE") or not _compiles(["-march=native"], "int main(void){return 0;}"):
        return []
    return ["-march=native"]


def extensions() -> list:
    debug = _flag("CNNC_DEBUG_BUILD")
    omp = _openmp_flags()
    opt = ["-O1", "-g"] if debug else ["-O3"]
    cflags = opt + _native_flags() + omp + ["-Wno-unused-function", "-Wno-unreachable-code"]
    only = {s for s in os.environ.get("CNNC_KERNELS", "").split(",") if s}
    exts = []
    for pyx in sorted(KERNELS.glob("*.pyx")):
        if only and pyx.stem not in only:
            continue
        exts.append(Extension(
            f"cnnc._kernels.{pyx.stem}",
            [str(pyx.relative_to(HERE))],
            include_dirs=[numpy.get_include(), str(KERNELS)],
            extra_compile_args=cflags + ["-pthread"],
            extra_link_args=omp + ["-pthread"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        ))
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "nonecheck": False,
        "cdivision": True,
        "embedsignature": True,
    }
    return cythonize(exts, compiler_directives=directives, include_path=[str(KERNELS)],
                     quiet=True,
                     force=_mode_changed(debug, [e.name.rsplit(".", 1)[1] for e in exts]))


def _mode_changed(debug: bool, modules: list) -> bool:
    """True when one of ``modules`` was last built with the other CNNC_DEBUG_BUILD
    setting: its C must then be regenerated (cythonize only looks at file times)."""
    stamp = KERNELS / ".build-mode"
    try:
        modes = json.loads(stamp.read_text())
    except (OSError, ValueError):
        modes = {}
    mode = "debug" if debug else "release"
    changed = any(modes.get(m) != mode for m in modules)
    stamp.write_text(json.dumps({**modes, **{m: mode for m in modules}}))
    return changed


setup(ext_modules=extensions())
