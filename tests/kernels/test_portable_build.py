"""The kernels compile without -march=native, as CNNC_PORTABLE=1 builds them and as a
machine without AVX-512 would: each Cython-generated module compiled at -O0 for baseline
x86-64, where AVX-512-only intrinsics and 64-byte vector register constraints in inline
asm fail ("impossible constraint in asm" once broke every non-AVX-512 build). Tests run
against the native build; a portable build of the whole package passed the suite too."""
import glob
import os
import platform
import shutil
import subprocess
import sysconfig

import numpy as np
import pytest

KERNELS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "kernels"))
SOURCES = sorted(glob.glob(os.path.join(KERNELS, "*.c")))

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or shutil.which("gcc") is None,
    reason="needs gcc on x86-64")


@pytest.mark.parametrize("src", SOURCES or [None],
                         ids=[os.path.basename(s) for s in SOURCES] or ["none"])
def test_kernel_module_compiles_for_baseline_x86_64(src, tmp_path):
    if src is None:
        pytest.skip("no generated C sources in kernels/ (the package was not built in place)")
    includes = [KERNELS, sysconfig.get_paths()["include"], np.get_include()]
    cmd = (["gcc", "-O0", "-march=x86-64", "-fopenmp", "-fPIC", "-w", "-c", src,
            "-o", str(tmp_path / "module.o")] + [f"-I{i}" for i in includes])
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
