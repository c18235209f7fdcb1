"""benchmarks/resolution_curve.py runs end to end in its --quick mode and prints every row of its
tables (a smoke run: it asserts nothing about speed or about the measured curve)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEMO_ROWS = ["256x256", "128x128", "96x96", "64x64", "48x48 (image size)", "32x32", "24x24", "16x16", "12x12"]
PET_ROWS = ["image size (reference)", "256x256", "128x128", "96x96", "64x64", "48x48", "32x32", "24x24", "16x16"]


def _tables(text: str) -> dict:
    """``{source: [row cells]}`` of the tables in ``text`` (each follows a ``Saliency: `` line)."""
    out = {}
    for part in text.split("Saliency: ")[1:]:
        source, _, body = part.partition("\n")
        rows = [line for line in body.splitlines() if line.startswith("| ")][1:]  # without the header
        out[source] = [[c.strip() for c in line.strip("|").split("|")] for line in rows]
    return out


def test_quick_mode_prints_every_row_and_a_choice(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "resolution_curve.py"), "--quick"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    demo, _, rest = p.stdout.partition("### Pet-format folder")
    pet, _, tail = rest.partition("### The cache tool stores the same maps")
    demo_tables, pet_tables = _tables(demo), _tables(pet)
    assert len(demo_tables) == 2 and len(pet_tables) == 2, p.stdout
    for rows in demo_tables.values():
        assert [r[0] for r in rows] == DEMO_ROWS
    for rows in pet_tables.values():
        assert [r[0] for r in rows] == PET_ROWS
    rows = {r[0]: r for r in demo_tables["object masks (oracle)"]}
    # bytes per map r*r + 4 and ImageNet 1,281,167 * (r*r + 4) bytes, by hand: 12x12 -> 148 and
    # 189,612,716 bytes (0.19 GB); 64x64 -> 4,100 and 5,252,784,700 bytes (5.25 GB)
    assert rows["12x12"][1:3] == ["148", "0.19"] and rows["64x64"][1:3] == ["4,100", "5.25"]
    # the masks stored at the image's size are the truth: no label error, the reference row
    assert rows["48x48 (image size)"][3] == "0.0000" and rows["48x48 (image size)"][5] == "0 (reference)"
    assert "maps at 64x64 equal those scored here: yes (12 of 12 maps compared)" in tail
    assert "### Choice" in tail and ("Large-set default: " in tail or "No resolution measured meets" in tail)
