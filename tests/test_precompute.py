"""The precompute tool end to end on real-format folders: the maps equal OpenCV's, a run killed
half-way resumes to the same file as an uninterrupted run, and bad arguments exit with 2."""

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from saliencymixplus.cache import SaliencyCache, cache_lock, quantize
from saliencymixplus.precompute import build_cache, main
from saliencymixplus.rawdata import load_split
from saliencymixplus.saliency import compute_saliency, gradient_saliency, sharpen

from cli_helpers import QUIET, ROOT, TOOL

HOOKED = ROOT / "tests" / "precompute_with_hooks.py"


def live_in_group(pgid):
    """Pids of the non-zombie processes in process group ``pgid`` (Linux /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def run_tool(args, tmp_path, env=None, check_orphans=False, stop_after=0):
    """Run the tool in its own session (so its pool workers can be reaped if it is killed);
    ``stop_after``: it SIGKILLs itself after that many written blocks (tests/precompute_with_hooks.py)."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    tool = [str(HOOKED), "--stop-after", str(stop_after)] if stop_after else [str(TOOL)]
    with open(out, "w") as fo, open(err, "w") as fe:
        p = subprocess.Popen([sys.executable, *tool, *map(str, args)], stdout=fo, stderr=fe, cwd=ROOT,
                             env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            rc = p.wait(timeout=120)
            if check_orphans and sys.platform.startswith("linux"):
                for _ in range(600):  # the pool workers die with their parent (or, still starting, soon after)
                    if not live_in_group(p.pid):
                        break
                    time.sleep(0.1)
                assert live_in_group(p.pid) == [], "pool workers outlived the killed tool"
        finally:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # orphaned workers of a killed run, if any
            except ProcessLookupError:
                pass
    return rc, out.read_text(), err.read_text()


def test_cifar_maps_equal_opencv(cifar_dir, tmp_path):
    out = build_cache("cifar100", cifar_dir["root"], "train", "fine_grained", tmp_path / "c.h5", workers=2,
                      block_size=10, postprocess="none", **QUIET)
    cache = SaliencyCache(out, expect=load_split("cifar100", cifar_dir["root"], "train"), method="fine_grained")
    want = compute_saliency(cifar_dir["train"][0], "fine_grained")
    assert cache.attrs["resolution"] == (32, 32)
    np.testing.assert_allclose(np.stack([cache[i] for i in range(len(cache))]), want, atol=0.5 / 255 + 1e-6)


def test_pet_maps_equal_opencv_resized(pet_dir, tmp_path):
    import cv2

    out = build_cache("oxford_pet", pet_dir["data_dir"], "test", "spectral_residual", tmp_path / "p.h5",
                      resolution="24x20", workers=2, block_size=4, postprocess="none", **QUIET)
    raw = load_split("oxford_pet", pet_dir["data_dir"], "test")
    cache = SaliencyCache(out, expect=raw)
    assert cache.read_all().shape == (len(raw), 24, 20)
    for i in range(len(raw)):
        full = compute_saliency(raw.image(i), "spectral_residual")[0]  # on the raw image, at its size
        want = cv2.resize(full, (20, 24), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(cache[i], np.clip(want, 0, 1), atol=0.5 / 255 + 1e-6)
    assert SaliencyCache(build_cache("oxford_pet", pet_dir["data_dir"], "test", "fine_grained", tmp_path / "d.h5",
                                     workers=0, **QUIET)).resolution == (256, 256)  # Pet default


def test_cli_end_to_end_and_kill_resume(cifar_dir, tmp_path):
    common = ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--split", "train",
              "--method", "fine_grained", "--workers", "2", "--block-size", "8"]
    ref = tmp_path / "ref.h5"
    rc, stdout, _ = run_tool(common + ["--out", ref], tmp_path)
    assert rc == 0 and ref.is_file() and not Path(str(ref) + ".partial").exists()
    assert "48 maps 32x32 uint8" in stdout and " MB, in " in stdout and stdout.rstrip().endswith(" s")

    out = tmp_path / "c.h5"
    partial = Path(str(out) + ".partial")
    rc, _, _ = run_tool(common + ["--out", out], tmp_path, stop_after=3, check_orphans=True)  # SIGKILLed after 3 of 6 blocks
    assert rc == -signal.SIGKILL
    assert not out.exists() and partial.is_file()  # never a half-valid final file
    rc, stdout, stderr = run_tool(common + ["--out", out, "--resume"], tmp_path)
    assert rc == 0, stderr
    assert "resuming" in stdout and "3 of 6 blocks already written" in stdout  # nothing recomputed
    assert "3/6" not in stderr and "24/48" in stderr  # the progress bar starts at the kept half
    a, b = SaliencyCache(ref), SaliencyCache(out)
    np.testing.assert_array_equal(a.read_all(), b.read_all())
    assert a.attrs == b.attrs and not partial.exists()

    rc, stdout, _ = run_tool(common + ["--out", out, "--resume"], tmp_path)  # complete: nothing to do
    assert rc == 0 and "nothing to do" in stdout


def test_resume_computes_again_only_the_blocks_whose_images_changed(tmp_path):
    """A build stopped by an undecodable image keeps its finished blocks. The image is fixed, and
    a good image of a finished block is replaced under its name by another picture: the resumed
    build keeps the untouched block, computes the changed one again, and equals a build from
    scratch."""
    import cv2

    from fixtures_data import make_pet_folder, smooth_images
    from saliencymixplus.rawdata import ImageDecodeError

    pet = make_pet_folder(tmp_path / "pet", n_train=6, n_test=2, seed=4)
    files = [pet["root"] / "images" / f"{n}.jpg" for n in pet["train"][0]]
    kept = files[5].read_bytes()
    files[5].write_bytes(b"")  # the third block (images 4, 5) cannot be computed
    out = tmp_path / "p.h5"
    kw = dict(resolution="16x16", workers=0, block_size=2, progress=False)
    with pytest.raises(ImageDecodeError):
        build_cache("oxford_pet", pet["data_dir"], "train", "spectral_residual", out, log=lambda *a: None, **kw)
    files[5].write_bytes(kept)
    other = smooth_images(np.random.default_rng(9), 1, 44, 52)[0]
    cv2.imwrite(str(files[0]), other[:, :, ::-1])  # the first block's first image, another picture
    notes = []
    build_cache("oxford_pet", pet["data_dir"], "train", "spectral_residual", out, resume=True, log=notes.append, **kw)
    assert any("1 of 3 blocks already written; 1 written block(s) hold images changed since" in n
               for n in notes), notes
    fresh = build_cache("oxford_pet", pet["data_dir"], "train", "spectral_residual", tmp_path / "fresh.h5",
                        resume=False, log=lambda *a: None, **kw)
    raw = load_split("oxford_pet", pet["data_dir"], "train")
    np.testing.assert_array_equal(SaliencyCache(out, expect=raw).read_all(), SaliencyCache(fresh).read_all())


def test_partial_discarded_without_resume(cifar_dir, tmp_path, capsys):
    out = tmp_path / "c.h5"
    args = ["--dataset", "cifar100", "--data-dir", str(cifar_dir["root"]), "--split", "test", "--out", str(out),
            "--workers", "0", "--block-size", "8", "--no-progress"]
    Path(str(out) + ".partial").write_bytes(b"stale")
    assert main(args) == 0
    assert "discarding" in capsys.readouterr().out
    # the default post-processing: the recommended sharpening of the OpenCV maps
    np.testing.assert_array_equal(SaliencyCache(out).read_all(),
                                  quantize(sharpen(compute_saliency(cifar_dir["test"][0], "fine_grained"), top=0.2,
                                                   power=2)))
    assert SaliencyCache(out).attrs["postprocess"] == "top=0.2,power=2"
    assert main(args + ["--dtype", "float16"]) == 0  # rebuilt in place, other dtype
    assert SaliencyCache(out).read_all().dtype == np.float16


@pytest.mark.parametrize("args,msg", [
    (["--dataset", "cifar100", "--out", "x.h5"], "CIFAR-100 needs --data-dir"),
    (["--dataset", "demo", "--out", "x.h5", "--resolution", "big"], "--resolution"),
    (["--dataset", "demo", "--out", "x.h5", "--method", "gradient"], "--checkpoint is required"),
    (["--dataset", "demo", "--out", "x.h5", "--checkpoint", "m.pt"], "--checkpoint is only used by method 'gradient'"),
    (["--dataset", "demo", "--out", "x.h5", "--workers", "-1"], "--workers must be >= 0"),
    (["--dataset", "demo", "--out", "x.h5", "--block-size", "0"], "--block-size must be >= 1, got 0"),
    (["--dataset", "demo", "--out", "x.h5", "--postprocess", "top=2"], "--postprocess top must be in (0, 1]"),
    (["--dataset", "demo", "--out", "x.h5", "--shard", "5/2"], "error: --shard must be K/N with 0 <= K < N"),
    (["--dataset", "imagenet21k", "--out", "x.h5"], "invalid choice"),
    (["--dataset", "demo"], "--out"),
])
def test_bad_arguments_exit_2(args, msg, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_a_message_that_starts_with_a_path_keeps_it(tmp_path, capsys, monkeypatch):
    """The tool names its flags in the library's refusals ("top must be ..." is --postprocess's),
    but leaves a message that starts with a path named like an argument as it is."""
    monkeypatch.chdir(tmp_path)
    lock = cache_lock(Path("top")).acquire(wait=False)
    try:
        assert main(["--dataset", "demo", "--out", "top", "--no-wait"]) == 2
    finally:
        lock.release()
    assert "error: top is being built by another process" in capsys.readouterr().err


def test_a_missing_data_dir_is_refused_before_the_output_is_touched(tmp_path, capsys):
    out = tmp_path / "new" / "c.h5"
    for extra in ([], ["--join", "2"]):
        assert main(["--dataset", "cifar100", "--out", str(out), *extra]) == 2
        assert "CIFAR-100 needs --data-dir" in capsys.readouterr().err
        assert not out.parent.exists()


def test_missing_data_exits_2_with_where_to_get_it(tmp_path, capsys):
    assert main(["--dataset", "oxford_pet", "--data-dir", str(tmp_path), "--out", str(tmp_path / "p.h5")]) == 2
    err = capsys.readouterr().err
    assert "get_oxford_pet.sh" in err and "Traceback" not in err
    assert main(["--dataset", "demo", "--method", "gradient", "--checkpoint", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path / "g.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_gradient_cache_from_a_checkpoint(cifar_dir, tmp_path, fake_models):
    from fixtures_data import tiny_net

    from saliencymixplus.transforms import eval_transform

    net = tiny_net(100)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": net.state_dict(), "config": {"model": "tiny", "dataset": "cifar100", "num_classes": 100}},
               ckpt)
    out = build_cache("cifar100", cifar_dir["root"], "test", "gradient", tmp_path / "g.h5", checkpoint=ckpt,
                      block_size=10, postprocess="none", **QUIET)
    raw = load_split("cifar100", cifar_dir["root"], "test")
    cache = SaliencyCache(out, expect=raw, method="gradient")
    assert len(cache.attrs["checkpoint"]) == 16
    x = torch.stack([eval_transform("cifar100")(raw.image(i))[0] for i in range(len(raw))])
    want = gradient_saliency(net.eval(), x, torch.from_numpy(raw.labels)).numpy()
    np.testing.assert_allclose(np.stack([cache[i] for i in range(len(cache))]), want, atol=0.5 / 255 + 1e-5)
    assert fake_models == [("tiny", 100, 32)]
    bad = tmp_path / "bad.pt"
    torch.save({"model": tiny_net(10).state_dict(), "config": {"model": "tiny", "dataset": "demo",
                                                               "num_classes": 10}}, bad)
    with pytest.raises(ValueError, match="10 classes but cifar100 has 100"):
        build_cache("cifar100", cifar_dir["root"], "test", "gradient", tmp_path / "h.h5", checkpoint=bad, **QUIET)


@pytest.mark.parametrize("dataset, split, method, resolution, data_dir", [
    ("demo", "train", None, None, None),
    ("cifar100", "test", "fine_grained", (32, 32), None),
    ("oxford_pet", "train", "gradient", (256, 128), "/data/pet dir"),
    ("demo", "test", "spectral_residual", None, "d"),
    ("cifar100", "train", "gradient", None, "it's"),
])
def test_rebuild_commands_are_what_the_tool_accepts(dataset, split, method, resolution, data_dir):
    """Every command the cache's error messages print parses with precompute's own parser,
    to the arguments it was built from."""
    from saliencymixplus.precompute import _parser
    from saliencymixplus.precompute_command import rebuild_command

    cmd = rebuild_command(dataset, split, method, "/tmp/o.h5", resolution, data_dir=data_dir)
    argv = shlex.split(cmd)
    assert argv[0] == "saliencymixplus-precompute" == _parser().prog
    args = _parser().parse_args(argv[1:])
    assert (args.dataset, args.split, args.out) == (dataset, split, "/tmp/o.h5")
    assert args.method == (method or "fine_grained")
    assert args.resolution == (f"{resolution[0]}x{resolution[1]}" if resolution else None)
    assert args.data_dir == (data_dir if data_dir else None if dataset == "demo" else "DATA_DIR")
    assert args.checkpoint == ("CHECKPOINT" if method == "gradient" else None)
