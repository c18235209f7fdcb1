"""A cache built in shards (issue 22 point 4): ``--shard K/N`` builds the K-th of N contiguous
runs of whole blocks into ``OUT.shard-K-of-N.h5``; ``--join N`` writes ``OUT``, an HDF5 virtual
dataset over the shard files; under ``torchrun`` the ranks shard and join by themselves. The
maps equal a single-process build's byte for byte; a missing, unfinished, damaged or
mismatched shard is refused (exit 2) with the one command that mends it, and that command works."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from saliencymixplus.cache import (CacheCorruptError, CacheMismatchError, SaliencyCache, _direct_reads_possible,
                                   content_hash, verify_cache)
from saliencymixplus.precompute import build_cache
from saliencymixplus.precompute import main as precompute_main
from saliencymixplus.precompute_command import parse_shard_path, shard_path, shard_range
from saliencymixplus.rawdata import load_split
from saliencymixplus.training import main as train_main

from cli_helpers import exit_code as _call, no_traceback, subprocess_env
from cli_helpers import QUIET, ROOT, TOOL, TINY_RUN as TINY
from fixtures_data import damage_map as _damage_map

pytestmark = pytest.mark.usefixtures("one_thread")


def args(cifar_dir, out, *extra) -> list[str]:
    """The tool's arguments for the tiny CIFAR folder's training split (48 images, 6 blocks of 8)."""
    return ["--dataset", "cifar100", "--data-dir", str(cifar_dir["root"]), "--split", "train", "--out", str(out),
            "--workers", "0", "--block-size", "8", "--no-progress", *map(str, extra)]


@pytest.fixture(scope="module")
def single(cifar_dir, tmp_path_factory):
    """The cache of one process, the reference."""
    return build_cache("cifar100", cifar_dir["root"], "train", "fine_grained",
                       tmp_path_factory.mktemp("one") / "one.h5", workers=0, block_size=8, **QUIET)


def build_shards(cifar_dir, out, n, *extra, skip=()):
    for k in range(n):
        if k not in skip:
            assert precompute_main(args(cifar_dir, out, "--shard", f"{k}/{n}", *extra)) == 0


def run_printed(command: str) -> int:
    """Run a command an error message printed (``saliencymixplus-precompute ...``) in this process."""
    argv = shlex.split(command)
    assert argv[0] == "saliencymixplus-precompute"
    return precompute_main(argv[1:])


def command_after(err: str, lead: str) -> str:
    """The command an error message gives after ``lead`` (to the end of its line)."""
    return err.split(lead, 1)[1].splitlines()[0].strip()


def test_shard_ranges_are_whole_blocks_in_order():
    # 48 images in blocks of 8: 6 blocks; shard k of n gets blocks [6k // n, 6(k + 1) // n).
    assert [shard_range(48, 8, k, 4) for k in range(4)] == [(0, 8), (8, 24), (24, 32), (32, 48)]
    assert [shard_range(50, 8, k, 2) for k in range(2)] == [(0, 24), (24, 50)]  # 7 blocks, the last short
    assert [shard_range(5, 8, k, 3) for k in range(3)] == [(0, 0), (0, 0), (0, 5)]  # more shards than blocks
    with pytest.raises(ValueError, match="0 <= K < N"):
        shard_range(48, 8, 4, 4)
    assert shard_path("d/c.h5", 3, 8) == Path("d/c.shard-3-of-8.h5")
    assert parse_shard_path("d/c.tar.shard-3-of-8.h5") == (Path("d/c.tar.h5"), 3, 8)
    assert parse_shard_path("d/c.h5") is None


@pytest.mark.parametrize("kw, want", [
    (dict(shard=(3, 8), resume=True), dict(shard="3/8", join=None, resume=True, dtype="uint8")),
    (dict(join=8), dict(shard=None, join=8, resume=False)),
    (dict(shard=(0, 2), dtype="float16", postprocess="top=0.1,power=3"),
     dict(shard="0/2", dtype="float16", postprocess="top=0.1,power=3")),
])
def test_shard_and_join_commands_are_what_the_tool_accepts(kw, want):
    from saliencymixplus.precompute import _parser
    from saliencymixplus.precompute_command import rebuild_command

    cmd = rebuild_command("cifar100", "train", "fine_grained", "/data/o.h5", (32, 32), "/data/cifar dir", **kw)
    got = _parser().parse_args(shlex.split(cmd)[1:])
    assert (got.out, got.data_dir, got.resolution) == ("/data/o.h5", "/data/cifar dir", "32x32")
    assert {k: getattr(got, k) for k in want} == want


@pytest.mark.parametrize("n, spans", [(2, [(0, 24), (24, 48)]),
                                      (8, [(0, 0), (0, 8), (8, 16), (16, 24), (24, 24), (24, 32), (32, 40),
                                           (40, 48)])])
def test_sharded_build_equals_one_process_byte_for_byte(n, spans, cifar_dir, single, tmp_path):
    out = tmp_path / "c.h5"
    build_shards(cifar_dir, out, n)
    for k, (a, b) in enumerate(spans):
        s = SaliencyCache(shard_path(out, k, n))
        assert (s.attrs["shard"], s.attrs["num_shards"], s.attrs["start"], s.attrs["stop"],
                s.attrs["split_count"], len(s)) == (k, n, a, b, 48, b - a)
    assert not out.exists()
    assert precompute_main(args(cifar_dir, out, "--join", n)) == 0
    want = SaliencyCache(single)
    raw = load_split("cifar100", cifar_dir["root"], "train")
    got = verify_cache(out, expect=raw, method="fine_grained")
    with h5py.File(out, "r") as f:
        assert f["saliency"].is_virtual
        assert sorted(s.file_name for s in f["saliency"].virtual_sources()) == \
            sorted(shard_path(out, k, n).name for k, (a, b) in enumerate(spans) if b > a)  # relative names
        assert content_hash(f) == got.attrs["content_sha256"]  # read through the virtual dataset
    for k in ("dataset", "split", "count", "fingerprint", "method", "resolution", "postprocess", "format_version"):
        assert got.attrs[k] == want.attrs[k], k
    assert got.read_all().tobytes() == want.read_all().tobytes()
    # Read per map: through the checksums, then (verified) as the shards' chunks, read directly.
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in [out, *(shard_path(out, k, n) for k in range(n))]:
        shutil.move(p, moved / p.name)  # the folder moves: the shards are found beside the cache
    checked = SaliencyCache(moved / out.name, in_memory=False)
    assert checked.reads_checked
    assert b"".join(checked.stored(i).tobytes() for i in range(48)) == want.read_all().tobytes()
    fast = verify_cache(moved / out.name)
    assert not fast.reads_checked and not _direct_reads_possible(moved / out.name)
    assert b"".join(fast.stored(i).tobytes() for i in range(-48, 0)) == want.read_all().tobytes()


def test_gradient_shards_equal_one_process(cifar_dir, tmp_path, fake_models):
    import torch
    from fixtures_data import tiny_net

    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": tiny_net(100).state_dict(),
                "config": {"model": "tiny", "dataset": "cifar100", "num_classes": 100}}, ckpt)
    common = dict(checkpoint=ckpt, block_size=5, **QUIET)
    one = build_cache("cifar100", cifar_dir["root"], "test", "gradient", tmp_path / "one.h5", **common)
    for k in range(3):
        build_cache("cifar100", cifar_dir["root"], "test", "gradient", tmp_path / "g.h5", shard=(k, 3), **common)
    extra = ["--method", "gradient", "--checkpoint", ckpt]
    assert precompute_main(["--dataset", "cifar100", "--data-dir", str(cifar_dir["root"]), "--split", "test",
                            "--out", str(tmp_path / "g.h5"), "--join", "3", *map(str, extra)]) == 0
    assert SaliencyCache(tmp_path / "g.h5").read_all().tobytes() == SaliencyCache(one).read_all().tobytes()


def test_a_killed_shard_build_resumes_from_its_finished_blocks(cifar_dir, single, tmp_path):
    out = tmp_path / "c.h5"
    hooked = [sys.executable, str(ROOT / "tests" / "precompute_with_hooks.py"), "--stop-after", "1"]
    p = subprocess.run([*hooked, *args(cifar_dir, out, "--shard", "1/2")], env=subprocess_env(), timeout=300)
    assert p.returncode == -9  # SIGKILLed after its first block
    partial = Path(str(shard_path(out, 1, 2)) + ".partial")
    assert partial.is_file() and not shard_path(out, 1, 2).exists()
    p = subprocess.run([sys.executable, str(TOOL), *args(cifar_dir, out, "--shard", "1/2", "--resume")],
                       env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"resuming {partial}: 1 of 3 blocks already written" in p.stdout
    assert precompute_main(args(cifar_dir, out, "--shard", "0/2")) == 0
    assert precompute_main(args(cifar_dir, out, "--join", "2")) == 0
    assert SaliencyCache(out).read_all().tobytes() == SaliencyCache(single).read_all().tobytes()


def test_torchrun_two_ranks_equal_one_process(cifar_dir, single, tmp_path):
    """``torchrun --nproc_per_node 2``: each rank builds its shard, rank 0 joins after the gloo barrier."""
    out = tmp_path / "t.h5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(TOOL),
           *args(cifar_dir, out)]
    p = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "joined from 2 shard files" in p.stdout
    assert sorted(x.name for x in tmp_path.glob("t.*")) == ["t.h5", "t.shard-0-of-2.h5", "t.shard-1-of-2.h5"]
    assert SaliencyCache(shard_path(out, 1, 2)).attrs["start"] == 24
    assert verify_cache(out).read_all().tobytes() == SaliencyCache(single).read_all().tobytes()


@pytest.mark.parametrize("extra, msg", [
    (["--shard", "5/4"], "--shard must be K/N with 0 <= K < N"),
    (["--shard", "0/0"], "--shard must be K/N with 0 <= K < N"),
    (["--shard=-1/2"], "--shard must be K/N with 0 <= K < N"),
    (["--shard", "a/b"], "--shard must look like K/N"),
    (["--shard", "1"], "--shard must look like K/N"),
    (["--join", "0"], "--join must be >= 1, got 0"),
    (["--shard", "0/2", "--join", "2"], "give one of them"),
])
def test_bad_shard_arguments_exit_2(extra, msg, tmp_path, capsys):
    assert precompute_main(["--dataset", "demo", "--out", str(tmp_path / "x.h5"), *extra]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_shard_or_join_under_torchrun_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    for extra in (["--shard", "0/2"], ["--join", "2"]):
        assert precompute_main(["--dataset", "demo", "--out", str(tmp_path / "x.h5"), *extra]) == 2
        assert "not used under torchrun (WORLD_SIZE=2)" in capsys.readouterr().err
    assert precompute_main(["--dataset", "demo", "--out", str(tmp_path / "x.h5")]) == 2  # no rendezvous
    assert "unset RANK and WORLD_SIZE" in no_traceback(capsys.readouterr().err)


def test_join_names_each_bad_shard_and_the_command_that_mends_it(cifar_dir, single, tmp_path, capsys):
    out = tmp_path / "c.h5"
    build_shards(cifar_dir, out, 3, skip=(1,))
    Path(str(shard_path(out, 0, 3)) + ".partial").write_bytes(b"")  # harmless beside a finished shard
    Path(str(shard_path(out, 1, 3)) + ".partial").write_bytes(b"")  # an interrupted build
    assert precompute_main(args(cifar_dir, out, "--shard", "2/3", "--method", "spectral_residual")) == 0
    capsys.readouterr()
    assert precompute_main(args(cifar_dir, out, "--join", 3)) == 2
    err = no_traceback(capsys.readouterr().err, lines=2)
    assert f"shard 1 of 3 ({shard_path(out, 1, 3)}) is unfinished" in err
    assert f"shard 2 of 3 ({shard_path(out, 2, 3)}) does not match" in err
    assert "method: shard has 'spectral_residual', joined cache has 'fine_grained'" in err
    assert "shard 0 " not in err and not out.exists()
    for line in err.splitlines():  # each line's command builds its shard as the join wants it
        cmd = command_after(line, "rebuild the shard with: ")
        assert cmd.endswith("--resume") and "--shard" in cmd and f"--out {out}" in cmd
        assert run_printed(cmd + " --no-progress --workers 0 --block-size 8") == 0
    assert precompute_main(args(cifar_dir, out, "--join", 3)) == 0
    assert SaliencyCache(out).read_all().tobytes() == SaliencyCache(single).read_all().tobytes()

    shard_path(out, 0, 3).unlink()
    Path(str(shard_path(out, 0, 3)) + ".partial").unlink()
    capsys.readouterr()
    assert precompute_main(args(cifar_dir, out, "--join", 3)) == 2
    assert f"shard 0 of 3 ({shard_path(out, 0, 3)}) is missing" in no_traceback(capsys.readouterr().err)


def test_join_refuses_shards_of_another_block_size(cifar_dir, tmp_path, capsys):
    out = tmp_path / "c.h5"
    assert precompute_main(args(cifar_dir, out, "--shard", "0/2")) == 0  # images 0..23
    assert precompute_main(args(cifar_dir, out, "--shard", "1/2", "--block-size", "16")) == 0  # 16..47, blocks of 16
    assert precompute_main(args(cifar_dir, out, "--join", 2)) == 2
    err = no_traceback(capsys.readouterr().err)
    assert "shard 1 starts at 16, not 24" in err and "the same --block-size" in err


@pytest.fixture()
def joined(cifar_dir, tmp_path):
    out = tmp_path / "c.h5"
    build_shards(cifar_dir, out, 2)
    assert precompute_main(args(cifar_dir, out, "--join", 2)) == 0
    return out


def test_a_joined_cache_with_a_missing_shard_is_refused_by_every_reader(joined, cifar_dir, tmp_path, capsys):
    raw = load_split("cifar100", cifar_dir["root"], "train")
    shard = shard_path(joined, 1, 2)
    keep = tmp_path / "keep.h5"
    opened = SaliencyCache(joined, expect=raw, in_memory=False)
    shutil.move(shard, keep)  # HDF5 would read its maps as zeros
    np.testing.assert_array_equal(opened.stored(23), SaliencyCache(shard_path(joined, 0, 2)).stored(23))
    with pytest.raises(CacheMismatchError, match=f"saliency cache {shard} cannot be read at map 6"):
        opened.stored(30)  # gone since it was opened
    for read in (lambda: SaliencyCache(joined, expect=raw), lambda: verify_cache(joined, expect=raw)):
        with pytest.raises(CacheMismatchError, match=f"shard 1 of 2 \\({shard}\\) is missing") as e:
            read()
        cmd = command_after(str(e.value), "rebuild the shard with: ")
        assert cmd == (f"saliencymixplus-precompute --dataset cifar100 --data-dir {cifar_dir['root']} --split train "
                       f"--method fine_grained --out {joined} --resolution 32x32 --postprocess top=0.2,power=2 "
                       f"--shard 1/2 --resume")
    rc = _call(train_main, ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--saliency-cache", joined,
                            "--out-dir", tmp_path / "run", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and f"shard 1 of 2 ({shard}) is missing" in err and "Traceback" not in err
    assert run_printed(cmd + " --workers 0 --block-size 8 --no-progress") == 0  # the same maps: the join holds again
    verify_cache(joined, expect=raw)


def test_a_damaged_shard_is_named_by_verify_and_mended_by_its_command(joined, cifar_dir, single, tmp_path):
    raw = load_split("cifar100", cifar_dir["root"], "train")
    shard = shard_path(joined, 1, 2)
    _damage_map(shard, 5)  # map 24 + 5 of the split
    opened = SaliencyCache(joined, expect=raw, in_memory=False)  # the structure is intact
    with pytest.raises(CacheMismatchError, match=f"saliency cache {shard} cannot be read at map 5"):
        opened.stored(29)
    with pytest.raises(CacheCorruptError, match=f"shard 1 of 2 \\({shard}\\) is damaged: maps 0..23 cannot be read"
                       ) as e:
        verify_cache(joined, expect=raw)
    cmd = command_after(str(e.value), "rebuild the shard with: ")
    assert cmd.endswith("--shard 1/2 --resume")
    assert run_printed(cmd + " --workers 0 --block-size 8 --no-progress") == 0
    assert verify_cache(joined, expect=raw).read_all().tobytes() == SaliencyCache(single).read_all().tobytes()


def test_a_shard_of_another_build_asks_for_the_join_again(joined, cifar_dir, tmp_path):
    """A shard whose maps changed, with a content hash that vouches for them (a rebuild that
    gave other maps): the joined record no longer holds; joining again takes it in."""
    raw = load_split("cifar100", cifar_dir["root"], "train")
    shard = shard_path(joined, 0, 2)
    with h5py.File(shard, "r+") as f:
        f["saliency"][3] = 255 - f["saliency"][3]
        f.attrs["content_sha256"] = content_hash(f)
    verify_cache(shard)  # a sound shard on its own
    with pytest.raises(CacheMismatchError, match="shard 0 of 2 .* holds another build than the one joined") as e:
        SaliencyCache(joined, expect=raw)
    cmd = command_after(str(e.value), "join the shards again with: ")
    assert cmd.endswith("--join 2")
    assert run_printed(cmd) == 0
    with h5py.File(shard, "r") as f:
        assert verify_cache(joined, expect=raw).stored(3).tobytes() == f["saliency"][3].tobytes()


def test_a_joined_cache_is_a_cache_for_training(joined, cifar_dir, tmp_path, capsys):
    rc = _call(train_main, ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--saliency-cache", joined,
                            "--out-dir", tmp_path / "run", *TINY])
    assert rc == 0, capsys.readouterr().err
    assert precompute_main(args(cifar_dir, joined, "--resume")) == 0  # a complete cache: nothing to do
    assert "nothing to do" in capsys.readouterr().out


def test_an_edited_joined_file_fails_its_own_hash_and_is_joined_again(joined, cifar_dir):
    raw = load_split("cifar100", cifar_dir["root"], "train")
    with h5py.File(joined, "r+") as f:
        f.attrs["note"] = "edited"  # not a shard's business: only the joined file's hash covers it
    SaliencyCache(joined, expect=raw)  # the structure is intact
    with pytest.raises(CacheCorruptError, match="no longer matches the hash written when it was joined") as e:
        verify_cache(joined, expect=raw)
    cmd = command_after(str(e.value), "Rebuild it with: ")
    assert cmd.endswith("--join 2") and "--shard" not in cmd
    assert run_printed(cmd) == 0
    verify_cache(joined, expect=raw)
