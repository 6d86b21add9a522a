"""Progress off a terminal: plain lines every few seconds, never carriage-return redraws."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = """
import dfi_engine.bars as b
b.EVERY = 0.0
with b.bar(total=3, desc="faces", unit="img") as bar:
    for _ in range(3):
        bar.update(1)
for _ in b.bar(range(2), desc="extract", unit="file"):
    pass
"""


@pytest.mark.slow  # a child Python with its stderr off a terminal
def test_a_redirected_bar_prints_lines():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [x.split(" (")[0] for x in r.stderr.splitlines()]
    assert "\r" not in r.stderr
    assert lines == ["faces: 1/3 img", "faces: 2/3 img", "faces: 3/3 img", "extract: 1/2 file", "extract: 2/2 file"]
