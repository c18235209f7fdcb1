"""tools/visualize_mix.py answers bad arguments with exit status 2 and a message, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cli_helpers import exit_code

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "foo"], "argument --dataset: invalid choice: 'foo'"),
    (["--dataset", "cifar100"], "CIFAR-100 needs --data-dir"),
    (["--dataset", "cifar100", "--data-dir", "/nonexistent"], "CIFAR-100 not found"),
    (["--start", "4999"], "is past the end of demo/train (5000 images)"),
])
def test_visualize_mix_bad_arguments_exit_2(argv, message, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import visualize_mix

    assert exit_code(visualize_mix.main, argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
