"""A layer is streamed: peak memory does not grow with the size of the files in it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import SRC

_PEAK = (
    "import resource, subprocess, sys;"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL);"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


@pytest.mark.slow  # compresses 300 MB twice: ~10 s each on 2 cores
@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_300_mb_layer_builds_in_flat_memory(tmp_path: Path, compression: str) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(300):
            f.write(os.urandom(1 << 20))  # incompressible, so the blob is as big as the input
    cmd = [sys.executable, "-m", "lamina", "build", "--add", f"{big}:/big", "--compression", compression,
           "-o", str(tmp_path / "img.tar")]
    res = subprocess.run([sys.executable, "-c", _PEAK, *cmd], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=300)
    assert res.returncode == 0, res.stderr
    peak_mb = int(res.stdout) / 1024
    assert peak_mb < 150, f"peak RSS {peak_mb:.0f} MB for a 300 MB layer"
    assert (tmp_path / "img.tar").stat().st_size > 300 << 20  # random data: the layer really is that big
