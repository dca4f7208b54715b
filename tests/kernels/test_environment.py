"""The cuSPARSELt version a figure records is the library that runs, not the one torch was built against."""

import ctypes
import os
import shutil
import subprocess

import pytest

from workbench.kernels.measure.environment import loaded_cusparselt_version

# a stand-in library with cuSPARSELt's version entry point, reporting 0.10.3
FAKE_LIBRARY = """
int cusparseLtGetProperty(int property, int *value) {
    static const int parts[] = {0, 10, 3};
    if (property < 0 || property > 2) return 3;
    *value = parts[property];
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a C compiler to build the stand-in library")
def test_loaded_version_is_read_from_the_library_in_the_process(tmp_path):
    source, library = tmp_path / "fake.c", tmp_path / "libfakecusparselt.so"
    source.write_text(FAKE_LIBRARY)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)

    assert loaded_cusparselt_version(str(library)) is None  # not loaded yet: never loaded by the check itself
    handle = ctypes.CDLL(str(library), mode=os.RTLD_GLOBAL)
    assert loaded_cusparselt_version(str(library)) == 1003  # major * 1000000 + minor * 100 + patch
    del handle
