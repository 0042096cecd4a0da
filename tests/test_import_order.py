"""Every module imports on its own, first, in a fresh interpreter (no circular-import trap)."""

import pkgutil
import subprocess
import sys

import pytest

import lens_inversion

MODULES = sorted(m.name for m in pkgutil.walk_packages(lens_inversion.__path__, "lens_inversion.")
                 if ".models.train" not in m.name and not m.name.endswith("__main__"))


@pytest.mark.parametrize("chunk", [MODULES[i::4] for i in range(4)], ids=lambda c: c[0])
def test_each_module_imports_first(chunk):
    code = "\n".join(
        f"import subprocess, sys\nr = subprocess.run([sys.executable, '-c', 'import {name}'], capture_output=True, text=True)\n"
        f"assert r.returncode == 0, ({name!r}, r.stderr[-800:])"
        for name in chunk
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-1500:]
