"""DDP on 2 gloo processes (CPU) against one process with the same global batch.

One ``torch.multiprocessing.spawn`` of 2 ranks (module fixture) trains three tiny models for
a few steps with ``--mix_aug none`` through the real ``DeviceLoader`` (no augmentation) and
``train_one_epoch``, and evaluates the BatchNorm one through ``evaluate``; the tests redo the
same in this process. What they show:

* without BatchNorm, the weights equal those of one process with the global batch (up to the
  order of float sums in the gradient all-reduce);
* with BatchNorm they do not, and precisely because each rank normalises with its own shard's
  statistics: they equal one process whose BatchNorm sees each rank's shard apart
  (``ShardedBatchNorm``, a "ghost batch" of the local batch size);
* evaluation is exact: the sharded, reduced test errors equal one process's evaluation of
  the weights rank 0 holds (what the checkpoint saves), although each rank's BatchNorm
  running statistics had drifted apart during training.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from saliencymixplus.training import Config
from saliencymixplus.training.distributed import Dist
from saliencymixplus.training.loaders import DeviceLoader
from saliencymixplus.training.loop import evaluate, train_one_epoch

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD, GLOBAL_BATCH, STEPS, K = 2, 16, 4, 5
MEAN_STD = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def data():
    """``(train images, train labels, test images, test labels)``: uint8 NHWC, 8x8 pixels;
    an odd test count so that the two shards differ in size."""
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (96, 8, 8, 3), dtype=np.uint8), rng.integers(0, K, 96),
            rng.integers(0, 256, (41, 8, 8, 3), dtype=np.uint8), rng.integers(0, K, 41))


def make_net(batchnorm: bool) -> nn.Module:
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(8) if batchnorm else nn.Identity()
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm, nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, K))


class ShardedBatchNorm(nn.Module):
    """``net`` run on each rank's share of a global batch apart (rank ``r`` of ``world`` gets
    images ``r::world``, as :class:`DeviceLoader` deals them), outputs put back in order: its
    BatchNorm sees the statistics each DDP rank sees."""

    def __init__(self, net: nn.Module, world: int):
        super().__init__()
        self.net, self.world = net, world

    def forward(self, x):
        out = [self.net(x[r::self.world]) for r in range(self.world)]
        full = out[0].new_empty((x.shape[0], *out[0].shape[1:]))
        for r in range(self.world):
            full[r::self.world] = out[r]
        return full


def config() -> Config:
    return Config(dataset="demo", mix_aug="none", batch_size=GLOBAL_BATCH, learning_rate=0.1, seed=5,
                  epochs=1, progress=False, num_classes=K)


def train(d: Dist, batchnorm: bool, sharded_bn: bool = False) -> nn.Module:
    """``STEPS`` steps of ``train_one_epoch`` (DDP when ``d`` is a world of several)."""
    cfg = config()
    x, y, _, _ = data()
    net = make_net(batchnorm)
    model: nn.Module = net
    if d.enabled:
        model = nn.parallel.DistributedDataParallel(net)
    elif sharded_bn:
        model = ShardedBatchNorm(net, WORLD)
    loader = DeviceLoader(x, y, MEAN_STD, d.device, batch_size=GLOBAL_BATCH // d.world, train=True,
                          pad=0, flip=False, dist_=d)
    loader.limit = STEPS
    opt = torch.optim.SGD(net.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                          nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    train_one_epoch(cfg, d, model, net, loader, None, opt, None, 0)
    return net


def held_out(d: Dist) -> DeviceLoader:
    _, _, x, y = data()
    return DeviceLoader(x, y, MEAN_STD, d.device, batch_size=GLOBAL_BATCH // d.world, train=False, dist_=d)


def _rank(rank: int, world: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    try:
        d = Dist(rank=rank, world=world)
        out = {"plain": train(d, batchnorm=False).state_dict()}
        net = train(d, batchnorm=True)
        out["bn_before_eval"] = {k: v.clone() for k, v in net.state_dict().items()}
        out["eval"] = evaluate(config(), d, net, held_out(d))
        out["bn"] = net.state_dict()
        torch.save(out, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of the 2 gloo ranks ended with (a list indexed by rank)."""
    folder = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(_rank, args=(WORLD, str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _max_diff(a: dict, b: dict, params_only: bool = True) -> float:
    keys = [k for k in a if not params_only or ("running" not in k and "num_batches" not in k)]
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys)


def test_without_batchnorm_ddp_weights_equal_one_process_with_the_global_batch(ranks):
    single = train(Dist(), batchnorm=False).state_dict()
    assert _max_diff(ranks[0]["plain"], ranks[1]["plain"]) == 0  # ranks agree exactly
    assert _max_diff(single, make_net(False).state_dict()) > 1e-2  # it did train
    # Equal but for the order of float sums (the all-reduce averages two half-batch means).
    for k, v in single.items():
        torch.testing.assert_close(ranks[0]["plain"][k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_with_batchnorm_ddp_weights_differ_only_by_per_rank_statistics(ranks):
    full = train(Dist(), batchnorm=True).state_dict()
    sharded = train(Dist(), batchnorm=True, sharded_bn=True).state_dict()
    ddp = ranks[0]["bn"]
    assert _max_diff(ddp, ranks[1]["bn"]) == 0  # the parameters agree across ranks
    # Not the one-process weights: BatchNorm normalised each rank's 8 images, not all 16 ...
    assert _max_diff(ddp, full) > 1e-3
    # ... and that is the whole difference: one process with BatchNorm per shard matches.
    for k, v in sharded.items():
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_evaluation_is_exactly_that_of_rank_0s_weights(ranks):
    before = [r["bn_before_eval"] for r in ranks]
    assert not torch.equal(before[0]["1.running_mean"], before[1]["1.running_mean"])  # drifted apart
    net = make_net(True)
    net.load_state_dict(ranks[0]["bn"])  # what rank 0 holds and the checkpoint saves
    single = evaluate(config(), Dist(), net, held_out(Dist()))
    for r in range(WORLD):
        got = ranks[r]["eval"]
        assert got["test_top1_err"] == single["test_top1_err"]
        assert got["test_top5_err"] == single["test_top5_err"]
        assert got["test_loss"] == pytest.approx(single["test_loss"], rel=1e-6)
    # Evaluation changed no weights of rank 0 (it is the source of the statistics).
    assert _max_diff(ranks[0]["bn"], before[0], params_only=False) == 0
