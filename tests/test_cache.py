"""The HDF5 saliency cache: format, round trip, resumable writer, and refusal of mismatched,
truncated, incomplete or malformed files."""

import pickle

import h5py
import numpy as np
import pytest
import torch

from saliencymixplus.cache import FORMAT_VERSION, CacheMismatchError, CacheWriter, SaliencyCache, quantize
from saliencymixplus.precompute_command import parse_resolution
from saliencymixplus.rawdata import load_split


def _write(path, raw, maps, *, method="fine_grained", dtype="uint8", block_size=7):
    with CacheWriter(path, dataset=raw.name, split=raw.split, count=len(raw), fingerprint=raw.fingerprint(),
                     method=method, resolution=maps.shape[1:], dtype=dtype, block_size=block_size,
                     resume=False) as w:
        for a, b in w.pending():
            w.write(a, maps[a:b])
        return w.finalize()


@pytest.fixture()
def raw(cifar_dir):
    return load_split("cifar100", cifar_dir["root"], "train")


@pytest.fixture()
def maps(raw):
    return np.random.default_rng(0).random((len(raw), 32, 32), dtype=np.float32)


def test_round_trip_and_attributes(tmp_path, raw, maps):
    path = _write(tmp_path / "c.h5", raw, maps)
    assert path == tmp_path / "c.h5" and not (tmp_path / "c.h5.partial").exists()
    with h5py.File(path) as f:
        ds = f["saliency"]
        assert ds.shape == (len(raw), 32, 32) and ds.dtype == np.uint8 and ds.chunks == (1, 32, 32)
        assert ds.fletcher32  # every chunk checksummed
        assert set(f.keys()) == {"saliency"}
    c = SaliencyCache(path, expect=raw, method="fine_grained")
    attrs = dict(c.attrs)
    digest = attrs.pop("content_sha256")
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert attrs == {"dataset": "cifar100", "split": "train", "count": len(raw), "fingerprint": raw.fingerprint(),
                     "method": "fine_grained", "resolution": (32, 32), "format_version": FORMAT_VERSION}
    assert FORMAT_VERSION == 2
    assert len(c) == len(raw) and c._data is not None  # small: read into memory
    m = c[5]
    assert m.dtype == np.float32 and m.shape == (32, 32)
    np.testing.assert_allclose(m, maps[5], atol=0.5 / 255 + 1e-6)
    allq = c.read_all()
    assert allq.dtype == np.uint8
    np.testing.assert_array_equal(allq, quantize(maps))
    disk = SaliencyCache(path, expect=raw, in_memory=False)
    assert disk._data is None
    np.testing.assert_array_equal(disk[5], m)
    np.testing.assert_array_equal(disk.read_all(), allq)
    with pytest.raises(IndexError):
        disk[len(raw)]


def test_float16(tmp_path, raw, maps):
    c = SaliencyCache(_write(tmp_path / "c.h5", raw, maps, dtype="float16"), expect=raw)
    assert c.read_all().dtype == np.float16
    np.testing.assert_allclose(c[3], maps[3], atol=1e-3)


def test_quantize():
    """One rule for numpy arrays and tensors: clip to [0, 1], NaN -> 0, +inf -> 1, then
    ``round(255 * s)`` with ties to even (127.5 -> 128, 0.5 -> 0, 1.5 -> 2)."""
    s = [-1, 0, 0.5, 1, 2, np.nan, np.inf, -np.inf, 0.5 / 255, 1.5 / 255]
    want = [0, 0, 128, 255, 255, 0, 255, 0, 0, 2]
    q = quantize(np.array([[s]], np.float64))
    assert q.dtype == np.uint8 and q.tolist() == [[want]]
    t = quantize(torch.tensor([[s]], dtype=torch.float64))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.tolist() == [[want]]
    half = quantize(torch.tensor([[[-1.0, 0.25, np.nan, 3.0]]]), "float16")
    assert half.dtype == torch.float16 and half.tolist() == [[[0.0, 0.25, 0.0, 1.0]]]
    with pytest.raises(ValueError, match="dtype must be one of"):
        quantize(np.zeros((1, 1, 1)), "int8")


def test_parse_resolution():
    assert parse_resolution("32x24") == (32, 24) and parse_resolution("64") == (64, 64)
    assert parse_resolution((5, 6)) == (5, 6)
    for bad in ("axb", "0x4", "1x2x3"):
        with pytest.raises(ValueError, match="resolution"):
            parse_resolution(bad)


def test_mismatch_names_what_differs_and_how_to_rebuild(tmp_path, cifar_dir, raw, maps):
    path = _write(tmp_path / "c.h5", raw, maps)
    test = load_split("cifar100", cifar_dir["root"], "test")
    with pytest.raises(CacheMismatchError, match="split: cache has 'train', data set has 'test'") as e:
        SaliencyCache(path, expect=test)
    msg = str(e.value)
    assert "count: cache has 48, data set has 24" in msg and "fingerprint" in msg
    assert "saliencymixplus-precompute --dataset cifar100" in msg and "--split test" in msg
    assert isinstance(e.value, ValueError)
    relabeled = load_split("cifar100", cifar_dir["root"], "train")
    relabeled.labels[0] = (relabeled.labels[0] + 1) % 100
    with pytest.raises(CacheMismatchError, match="fingerprint: cache has") as e:
        SaliencyCache(path, expect=relabeled)
    assert "split:" not in str(e.value)
    with pytest.raises(CacheMismatchError, match="method: cache has 'fine_grained', requested 'gradient'"):
        SaliencyCache(path, expect=raw, method="gradient")
    demo = load_split("demo", None, "test")
    with pytest.raises(CacheMismatchError, match="dataset: cache has 'cifar100', data set has 'demo'"):
        SaliencyCache(path, expect=demo)


def test_truncated_file_is_refused(tmp_path, raw, maps):
    path = _write(tmp_path / "c.h5", raw, maps)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    for in_memory in (True, False):
        with pytest.raises(CacheMismatchError, match="truncated") as e:
            c = SaliencyCache(path, expect=raw, in_memory=in_memory)
            c.read_all()
        assert "Rebuild it with: saliencymixplus-precompute" in str(e.value)
    path.write_bytes(b"not hdf5")
    with pytest.raises(CacheMismatchError, match="not a readable HDF5 file"):
        SaliencyCache(path)


def test_missing_and_incomplete(tmp_path, raw, maps):
    with pytest.raises(FileNotFoundError, match="build it with: saliencymixplus-precompute"):
        SaliencyCache(tmp_path / "none.h5", expect=raw)
    w = CacheWriter(tmp_path / "x.h5", dataset="cifar100", split="train", count=len(raw), fingerprint=raw.fingerprint(),
                    method="fine_grained", resolution=(32, 32), block_size=16)
    w.write(0, maps[:16])
    w.close()
    with pytest.raises(FileNotFoundError, match="--resume"):
        SaliencyCache(tmp_path / "x.h5", expect=raw)
    (tmp_path / "x.h5.partial").rename(tmp_path / "x.h5")  # a partial file renamed by hand
    with pytest.raises(CacheMismatchError, match="incomplete"):
        SaliencyCache(tmp_path / "x.h5", expect=raw)


def test_writer_resumes_only_a_matching_partial(tmp_path, raw, maps):
    kw = dict(dataset="cifar100", split="train", count=len(raw), fingerprint=raw.fingerprint(),
              method="fine_grained", resolution=(32, 32), block_size=10)
    with CacheWriter(tmp_path / "c.h5", **kw) as w:
        assert w.pending() == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 48)]
        w.write(10, maps[10:20])
        w.write(40, maps[40:48])
        with pytest.raises(ValueError, match="shape"):
            w.write(0, maps[:9])
        with pytest.raises(ValueError, match="multiple of block_size"):
            w.write(5, maps[5:15])
        with pytest.raises(RuntimeError, match="3 of 5 blocks"):
            w.finalize()
    with CacheWriter(tmp_path / "c.h5", **kw) as w:
        assert "resuming" in w.note and w.images_done() == 18
        assert w.pending() == [(0, 10), (20, 30), (30, 40)]
        for a, b in w.pending():
            w.write(a, maps[a:b])
        w.finalize()
    np.testing.assert_array_equal(SaliencyCache(tmp_path / "c.h5", expect=raw).read_all(), quantize(maps))
    # Different settings: the partial file is discarded, not mixed in.
    with CacheWriter(tmp_path / "d.h5", **kw) as w:
        w.write(0, maps[:10])
    with CacheWriter(tmp_path / "d.h5", **{**kw, "method": "spectral_residual"}) as w:
        assert "discarding" in w.note and "method" in w.note and len(w.pending()) == 5
    with CacheWriter(tmp_path / "d.h5", **kw, resume=False) as w:
        assert w.note == "" and len(w.pending()) == 5
    (tmp_path / "e.h5.partial").write_bytes(b"garbage")
    with CacheWriter(tmp_path / "e.h5", **kw) as w:
        assert "unreadable" in w.note and len(w.pending()) == 5


def test_pickles_without_its_handle(tmp_path, raw, maps):
    c = SaliencyCache(_write(tmp_path / "c.h5", raw, maps), in_memory=False)
    first = c[1]
    assert c._file is not None
    c2 = pickle.loads(pickle.dumps(c))
    assert c2._file is None
    np.testing.assert_array_equal(c2[1], first)
    c.close()
    c2.close()
