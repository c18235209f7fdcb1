"""``--paper`` does what the published method does, seen from the model's side.

A tiny classifier that records every forward call (its input, its mode, its weights at that
moment) and a wrapper that records what the loop hands the mixer are driven through
``train_one_epoch`` with the configuration ``--paper`` parses to. From those records alone,
checked by hand (not with the code under test):

* each mixed batch first gets its saliency from the current model: one eval-mode forward of
  the whole unmixed batch, with a gradient taken to the input, equal to ``|d CE / d x|``
  summed over channels of the weights the step then trains;
* only the first half of the batch is trained on, each image with a peak-centred patch from a
  distinct image of the second half, and soft targets weighted by the saliency each keeps;
* the parameter gradients (and BatchNorm statistics) equal those of the same step with that
  saliency passed in precomputed and detached: the saliency pass leaves nothing behind.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saliencymixplus.training import parse_config
from saliencymixplus.training.distributed import Dist
from saliencymixplus.training.loop import build_mixer, train_one_epoch

from fixtures_data import Batches

pytestmark = pytest.mark.usefixtures("one_thread")

K, B, H, W = 10, 8, 16, 16


def tiny_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, K))


class Recorder(nn.Module):
    """:func:`tiny_net` that logs each forward: input, train/eval mode, whether the input
    needs a gradient, and a copy of the weights and buffers at that moment."""

    def __init__(self):
        super().__init__()
        self.net = tiny_net()
        self.calls: list[dict] = []

    def forward(self, x):
        self.calls.append(dict(x=x.detach().clone(), training=self.training, input_grad=x.requires_grad,
                               state={k: v.detach().clone() for k, v in self.net.state_dict().items()}))
        return self.net(x)


class recording:
    """Wrap a :data:`~saliencymixplus.training.loop.Mixer` to log the inputs of each ``mix``
    call, its generator's state before the call, and its outputs."""

    def __init__(self, mixer, log: list):
        self.mixer, self.log = mixer, log

    def coin(self, generator):
        return self.mixer.coin(generator)

    def mix(self, x, y, s, *, generator, mixed):
        g = generator
        self.log.append(dict(x=x.clone(), y=y.clone(), s=None if s is None else s.clone(),
                             s_grad=s is not None and (s.requires_grad or s.grad_fn is not None),
                             gen=(g.device, g.get_state())))
        r = self.mixer.mix(x, y, s, generator=g, mixed=mixed)
        self.log[-1].update(images=r.images.detach().clone(), targets=r.targets.detach().clone())
        return r


def make_batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, 3, H, W, generator=g), None, torch.randint(0, K, (B,), generator=g)) for _ in range(n)]


def paper_config(mix_prob: float, seed: int = 0):
    cfg = parse_config(["--paper", "--mix_prob", str(mix_prob), "--seed", str(seed), "--no-progress"])
    assert (cfg.mix_aug, cfg.box, cfg.pairing, cfg.saliency) == ("saliencymixplus", "peak", "half", "online")
    return cfg


def run_epoch(cfg, batches):
    model = Recorder()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          weight_decay=cfg.weight_decay)
    log: list = []
    train_one_epoch(cfg, Dist(), model, model, Batches(batches), recording(build_mixer(cfg), log), opt, None, 0)
    return model, log


def saliency_by_hand(state, x, y):
    """``|d sum CE(net(x), y) / d x|`` summed over channels, each map divided by its maximum,
    with ``net`` the tiny net holding ``state`` in eval mode."""
    net = tiny_net()
    net.load_state_dict(state)
    net.eval()
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(net(x), y, reduction="sum"), [x])
    s = g.abs().sum(1)
    return s / s.flatten(1).amax(1)[:, None, None]


def box_of(changed):
    """The bounding box ``(y1, x1, y2, x2)`` of a bool ``[H, W]`` mask, and whether the mask
    is exactly that box; ``None`` for an empty mask."""
    rows, cols = changed.any(1).nonzero()[:, 0], changed.any(0).nonzero()[:, 0]
    if len(rows) == 0:
        return None, True
    y1, y2, x1, x2 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    full = torch.zeros_like(changed)
    full[y1:y2, x1:x2] = True
    return (y1, x1, y2, x2), bool(torch.equal(full, changed))


def test_paper_step_trains_half_the_batch_on_online_saliency_of_the_current_model():
    cfg = paper_config(mix_prob=1.0)
    batches = make_batches(2)
    model, log = run_epoch(cfg, batches)

    assert len(log) == 2 and len(model.calls) == 4  # per step: a saliency pass, then the training pass
    pasted = 0
    for step, ((x, _, y), mixed) in enumerate(zip(batches, log)):
        sal_call, train_call = model.calls[2 * step], model.calls[2 * step + 1]
        # The saliency pass: the whole unmixed batch, eval mode, a gradient taken to the input.
        assert torch.equal(sal_call["x"], x) and not sal_call["training"] and sal_call["input_grad"]
        # ... of the current model: the weights (and BatchNorm statistics) this step trains.
        for k, v in sal_call["state"].items():
            assert torch.equal(v, train_call["state"][k]), k
        s_hand = saliency_by_hand(train_call["state"], x, y)
        assert torch.equal(mixed["x"], x) and torch.equal(mixed["y"], y)
        assert mixed["s"].shape == (B, H, W) and not mixed["s_grad"]
        torch.testing.assert_close(mixed["s"], s_hand, rtol=1e-5, atol=1e-6)

        # The training pass: train mode, the mixer's output, half the batch.
        assert train_call["training"] and not train_call["input_grad"]
        assert train_call["x"].shape == (B // 2, 3, H, W) and torch.equal(train_call["x"], mixed["images"])
        assert mixed["targets"].shape == (B // 2, K)

        sources = []
        for i in range(B // 2):
            out = train_call["x"][i]
            box, is_box = box_of((out != x[i]).any(0))
            assert is_box, f"step {step} image {i}: the changed pixels are not one rectangle"
            if box is None:  # an empty box (lam = 1): nothing pasted, own label only
                torch.testing.assert_close(mixed["targets"][i], F.one_hot(y[i], K).float())
                continue
            y1, x1, y2, x2 = box
            srcs = [j for j in range(B) if torch.equal(out[:, y1:y2, x1:x2], x[j, :, y1:y2, x1:x2])]
            assert len(srcs) == 1 and B // 2 <= srcs[0] < B, (step, i, srcs)  # from the second half
            j = srcs[0]
            sources.append(j)
            # Published box: centred on the source's saliency peak (clipped to the image).
            py, px = divmod(int(s_hand[j].flatten().argmax()), W)
            assert y1 <= py < y2 and x1 <= px < x2, (box, (py, px))
            if 0 < y1 and y2 < H:
                assert py - y1 == y2 - py
            if 0 < x1 and x2 < W:
                assert px - x1 == x2 - px
            # Label weight: share of own saliency kept against share of the source's pasted in.
            a = 1 - s_hand[i, y1:y2, x1:x2].sum() / s_hand[i].sum()
            b = s_hand[j, y1:y2, x1:x2].sum() / s_hand[j].sum()
            lam = a / (a + b)
            expected = lam * F.one_hot(y[i], K).float() + (1 - lam) * F.one_hot(y[j], K).float()
            torch.testing.assert_close(mixed["targets"][i], expected, rtol=1e-4, atol=1e-5)
            pasted += 1
        assert len(set(sources)) == len(sources)  # a shuffled second half: distinct sources
    assert pasted > 0, "every box was empty: choose another seed"
    # Step 2's saliency came from the weights step 1 left, not from the initial ones.
    assert not torch.equal(model.calls[2]["state"]["0.weight"], model.calls[0]["state"]["0.weight"])


def test_paper_gradients_equal_the_step_with_saliency_precomputed_and_detached():
    cfg = paper_config(mix_prob=1.0)
    batches = make_batches(2, seed=1)
    model, log = run_epoch(cfg, batches)
    # The loop leaves the last step's gradients in .grad (zeroed before backward, not after step).
    before = model.calls[-1]["state"]  # the weights and statistics the last step started from
    x, _, y = batches[-1]
    ref = tiny_net()
    ref.load_state_dict(before)
    ref.train()
    device, state = log[-1]["gen"]
    g = torch.Generator(device=device)
    g.set_state(state)
    s = log[-1]["s"].detach().clone()  # precomputed, detached
    images, targets = build_mixer(cfg).mix(x, y, s, generator=g, mixed=True)[:2]
    assert torch.equal(images, log[-1]["images"]) and torch.equal(targets, log[-1]["targets"])
    loss = -(targets * F.log_softmax(ref(images), dim=1)).sum(1).mean()
    loss.backward()
    for (name, p), q in zip(model.net.named_parameters(), ref.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=name)
    # One train-mode forward per step: the BatchNorm statistics moved once, as in the reference.
    for k, v in ref.state_dict().items():
        if "running" in k or "num_batches" in k:
            torch.testing.assert_close(model.net.state_dict()[k], v, rtol=1e-6, atol=1e-7, msg=k)


def test_paper_saliency_only_for_mixed_batches():
    cfg = paper_config(mix_prob=0.5, seed=0)
    batches = make_batches(8, seed=2)
    model, log = run_epoch(cfg, batches)
    sal = [c for c in model.calls if not c["training"]]
    trained = [c["x"].shape[0] for c in model.calls if c["training"]]
    assert 0 < len(log) < len(batches), "choose a seed that mixes some batches and not others"
    assert len(sal) == len(log)  # one saliency pass per mixed batch, none for the others
    assert sorted(trained) == [B // 2] * len(log) + [B] * (len(batches) - len(log))
    for c, m in zip(sal, log):
        assert torch.equal(c["x"], m["x"])
