"""Tests of the SURE training tricks against independent references (hand formulas, autograd)."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sure_ood.tricks import (
    SAM,
    CorrectnessHistory,
    CosineHead,
    crl_loss,
    make_swa,
    maybe_update_bn,
    regmixup_loss,
    replace_head,
    sample_lam_perm,
    sure_step,
    swalr_lr,
)

# --------------------------------------------------------------------------------------------
# helpers: hand-written references


def hand_ce(logits: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with label smoothing, written out: mean_i sum_c -q_ic log p_ic."""
    c = logits.shape[1]
    logp = logits - logits.logsumexp(dim=1, keepdim=True)
    q = torch.full_like(logp, smoothing / c)
    q[torch.arange(len(y)), y] += 1.0 - smoothing
    return -(q * logp).sum(dim=1).mean()


def hand_sam_sgd_step(params, bufs, loss_fn, *, lr, momentum, wd, rho, adaptive):
    """One SAM step over SGD(momentum, coupled weight decay), from the formulas of
    docs/method.md#sam.

    ``params``: dict name -> tensor (no grad); ``bufs``: dict of momentum buffers (updated);
    ``loss_fn(params, pass_idx)`` -> scalar. Returns the new params dict.
    """
    names = list(params)
    w = {n: params[n].detach().clone().requires_grad_(True) for n in names}
    g = dict(zip(names, torch.autograd.grad(loss_fn(w, 0), [w[n] for n in names]), strict=True))
    if rho > 0:
        t = {n: (w[n].detach().abs() if adaptive else torch.ones_like(w[n])) for n in names}
        norm = torch.sqrt(sum(((t[n] * g[n]) ** 2).sum() for n in names))
        e = {n: rho * t[n] ** 2 * g[n] / (norm + 1e-12) for n in names}
        wp = {n: (w[n].detach() + e[n]).requires_grad_(True) for n in names}
        g2 = torch.autograd.grad(loss_fn(wp, 1), [wp[n] for n in names])
        g = dict(zip(names, g2, strict=True))
    new = {}
    for n in names:
        d = g[n] + wd * w[n].detach()
        bufs[n] = d.clone() if n not in bufs else momentum * bufs[n] + d
        new[n] = w[n].detach() - lr * bufs[n]
    return new


def tiny_data(n: int = 16, d: int = 5, c: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    return x, y


# --------------------------------------------------------------------------------------------
# SAM


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_matches_hand_two_pass(adaptive: bool) -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double()
    x, y = tiny_data()
    hp = dict(lr=0.1, momentum=0.9, wd=5e-3)
    rho = 0.5 if adaptive else 0.05
    opt = SAM(
        model.parameters(),
        torch.optim.SGD,
        rho=rho,
        adaptive=adaptive,
        lr=hp["lr"],
        momentum=hp["momentum"],
        weight_decay=hp["wd"],
    )
    ref = {k: v.detach().clone() for k, v in model.named_parameters()}
    bufs: dict[str, torch.Tensor] = {}

    def loss_fn(p, _pass):
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    for _ in range(3):
        # SAM: explicit first_step / second_step
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.first_step(zero_grad=True)
        F.cross_entropy(model(x), y).backward()
        opt.second_step(zero_grad=True)
        ref = hand_sam_sgd_step(ref, bufs, loss_fn, rho=rho, adaptive=adaptive, **hp)
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), ref[name], atol=1e-6, rtol=0)


def test_sam_perturbation_is_not_trivial() -> None:
    """SAM's step differs from the base step when rho > 0 (guards the test above)."""
    torch.manual_seed(0)
    m1 = nn.Linear(5, 3).double()
    m2 = copy.deepcopy(m1)
    x, y = tiny_data()
    o1 = SAM(m1.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    o2 = torch.optim.SGD(m2.parameters(), lr=0.1)
    F.cross_entropy(m1(x), y).backward()
    o1.step(lambda: F.cross_entropy(m1(x), y).backward())
    F.cross_entropy(m2(x), y).backward()
    o2.step()
    assert not torch.allclose(m1.weight, m2.weight)


def test_sam_rho_zero_is_base_step_exactly() -> None:
    torch.manual_seed(1)
    m1 = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    m2 = copy.deepcopy(m1)
    x, y = tiny_data()
    x = x.float()
    kw = dict(lr=0.05, momentum=0.9, weight_decay=1e-2)
    o1 = SAM(m1.parameters(), torch.optim.SGD, rho=0.0, **kw)
    o2 = torch.optim.SGD(m2.parameters(), **kw)
    for _ in range(3):
        for m, o in ((m1, o1), (m2, o2)):
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p1, p2)


def test_sam_state_dict_roundtrip_resume_is_exact() -> None:
    torch.manual_seed(2)
    x, y = tiny_data()
    x = x.float()

    def make(model):
        return SAM(
            model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, weight_decay=1e-3
        )

    def train(model, opt, n):
        for _ in range(n):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step(lambda: F.cross_entropy(model(x), y).backward())

    base = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    m_a = copy.deepcopy(base)
    o_a = make(m_a)
    train(m_a, o_a, 4)

    m_b = copy.deepcopy(base)
    o_b = make(m_b)
    train(m_b, o_b, 2)
    buf = io.BytesIO()
    torch.save({"model": m_b.state_dict(), "opt": o_b.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    assert any("momentum_buffer" in s for s in ckpt["opt"]["state"].values())
    assert ckpt["opt"]["param_groups"][0]["rho"] == 0.05
    m_c = copy.deepcopy(base)
    o_c = make(m_c)
    m_c.load_state_dict(ckpt["model"])
    o_c.load_state_dict(ckpt["opt"])
    train(m_c, o_c, 2)
    for p_a, p_c in zip(m_a.parameters(), m_c.parameters(), strict=True):
        assert torch.equal(p_a, p_c)


def test_sam_closure_error_restores_weights() -> None:
    torch.manual_seed(3)
    m = nn.Linear(5, 3)
    x, y = tiny_data()
    x = x.float()
    opt = SAM(m.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    before = [p.detach().clone() for p in m.parameters()]
    F.cross_entropy(m(x), y).backward()

    def bad_closure():
        raise FloatingPointError("boom")

    with pytest.raises(FloatingPointError):
        opt.step(bad_closure)
    for p, b in zip(m.parameters(), before, strict=True):
        assert torch.equal(p, b)


# --------------------------------------------------------------------------------------------
# RegMixup


class LNNet(nn.Module):
    def __init__(self, d: int = 6, c: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, 16)
        self.ln = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.ln(self.fc1(x))))


def test_regmixup_matches_formula_fixed_lam_perm() -> None:
    torch.manual_seed(4)
    net = LNNet().double()
    x = torch.randn(8, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (8,))
    lam, perm = 0.37, torch.tensor([3, 0, 7, 1, 2, 6, 5, 4])
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    x_mix = lam * x + (1 - lam) * x[perm]
    z, zm = net(x), net(x_mix)
    expected = hand_ce(z, y, 0.1) + 0.2 * (
        lam * hand_ce(zm, y, 0.1) + (1 - lam) * hand_ce(zm, y[perm], 0.1)
    )
    for single in (True, False):
        loss, clean = regmixup_loss(
            net, x, y, crit, 0.2, 10.0, lam=lam, perm=perm, single_forward=single
        )
        torch.testing.assert_close(loss, expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(clean, z, atol=1e-12, rtol=0)


def test_regmixup_single_forward_equals_two_forwards_with_grads() -> None:
    torch.manual_seed(5)
    net1 = LNNet()
    net2 = copy.deepcopy(net1)
    x = torch.randn(8, 6)
    y = torch.randint(0, 4, (8,))
    crit = nn.CrossEntropyLoss()
    l1, _ = regmixup_loss(
        net1, x, y, crit, 0.2, 10.0, generator=torch.Generator().manual_seed(9), single_forward=True
    )
    l2, _ = regmixup_loss(
        net2,
        x,
        y,
        crit,
        0.2,
        10.0,
        generator=torch.Generator().manual_seed(9),
        single_forward=False,
    )
    torch.testing.assert_close(l1, l2, atol=1e-6, rtol=1e-6)
    l1.backward()
    l2.backward()
    for p1, p2 in zip(net1.parameters(), net2.parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-6, rtol=1e-5)


def test_regmixup_auto_uses_two_forwards_with_batchnorm() -> None:
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)).double()
    x = torch.randn(8, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    crit = nn.CrossEntropyLoss()
    lam, perm = 0.6, torch.randperm(8)
    ref, _ = regmixup_loss(copy.deepcopy(net), x, y, crit, 1.0, 10.0, lam=lam, perm=perm,
                           single_forward=False)  # fmt: skip
    auto, _ = regmixup_loss(copy.deepcopy(net), x, y, crit, 1.0, 10.0, lam=lam, perm=perm)
    single, _ = regmixup_loss(copy.deepcopy(net), x, y, crit, 1.0, 10.0, lam=lam, perm=perm,
                              single_forward=True)  # fmt: skip
    torch.testing.assert_close(auto, ref, atol=1e-12, rtol=0)
    assert not torch.allclose(single, ref)  # BN batch statistics differ: the reason for auto


def test_regmixup_weight_zero_is_clean_ce_and_uses_no_rng() -> None:
    net = LNNet()
    x = torch.randn(8, 6)
    y = torch.randint(0, 4, (8,))
    g = torch.Generator().manual_seed(1)
    state = g.get_state()
    loss, clean = regmixup_loss(net, x, y, nn.CrossEntropyLoss(), 0.0, 10.0, generator=g)
    torch.testing.assert_close(loss, hand_ce(net(x), y))
    assert torch.equal(g.get_state(), state)


def test_sample_lam_perm_reproducible_and_beta_distributed() -> None:
    g = torch.Generator().manual_seed(123)
    state = g.get_state()
    lam1, perm1 = sample_lam_perm(10, 10.0, g)
    g.set_state(state)
    lam2, perm2 = sample_lam_perm(10, 10.0, g)
    assert lam1 == lam2 and torch.equal(perm1, perm2)
    assert sorted(perm1.tolist()) == list(range(10))
    lams = np.array([sample_lam_perm(4, 10.0, g)[0] for _ in range(2000)])
    # Beta(10, 10): mean 0.5, std sqrt(1 / (4 * 21)) = 0.1091
    assert abs(lams.mean() - 0.5) < 0.015
    assert abs(lams.std() - math.sqrt(1 / 84)) < 0.01
    rng = np.random.default_rng(0)
    lam3, perm3 = sample_lam_perm(5, 2.0, rng)
    assert 0 < lam3 < 1 and sorted(perm3.tolist()) == list(range(5))


# --------------------------------------------------------------------------------------------
# CRL


def two_class_logits(kappas: list[float]) -> torch.Tensor:
    """Logits [0, log(k/(1-k))] so that max softmax = k (k > 0.5)."""
    k = torch.tensor(kappas, dtype=torch.float64)
    return torch.stack([torch.zeros_like(k), torch.log(k / (1 - k))], dim=1)


def test_crl_hand_example() -> None:
    hist = CorrectnessHistory(6)
    hist.correctness[:] = torch.tensor([3.0, 1, 1, 0, 2, 5])  # min over ALL = 0 (sample 3)
    hist.max_correctness = 4
    indices = torch.tensor([0, 1, 2, 4])  # c = 3, 1, 1, 2 -> c_bar = .75, .25, .25, .5
    logits = two_class_logits([0.6, 0.9, 0.7, 0.8]).requires_grad_(True)
    # pairs (0,1): t=+1, mu=.5: max(0, -(.6-.9)+.5) = .8
    #       (1,2): t=0: 0      (2,3): t=-1, mu=.25: max(0, (.7-.8)+.25) = .15
    #       (3,0): t=-1, mu=.25: max(0, (.8-.6)+.25) = .45      mean = 1.4 / 4 = .35
    loss = crl_loss(logits, indices, hist)
    assert loss.item() == pytest.approx(0.35, abs=1e-12)
    # dL/dkappa = [-1/2, 1/4, 1/4, 0]; sample 1's own pair has t=0, so its gradient comes
    # only from being kappa_j of pair (0, 1): gradients reach both members.
    (grad,) = torch.autograd.grad(loss, logits)
    dk = torch.tensor([-0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    k = torch.tensor([0.6, 0.9, 0.7, 0.8], dtype=torch.float64)
    dz_max = dk * k * (1 - k)  # d p_max / d z_max = p(1-p); d p_max / d z_other = -p(1-p)
    expected = torch.stack([-dz_max, dz_max], dim=1)
    torch.testing.assert_close(grad, expected, atol=1e-12, rtol=0)


def test_crl_gradcheck() -> None:
    hist = CorrectnessHistory(5)
    hist.correctness[:] = torch.tensor([0.0, 2, 1, 3, 1])
    hist.max_correctness = 3
    idx = torch.tensor([4, 1, 3, 2])
    logits = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: crl_loss(z, idx, hist), (logits,))


def test_crl_zero_denominator_is_guarded() -> None:
    hist = CorrectnessHistory(4)
    hist.correctness[:] = 1.0  # every sample always correct: m = M = 1
    logits = torch.randn(4, 3, requires_grad=True)
    loss = crl_loss(logits, torch.arange(4), hist)
    assert torch.isfinite(loss) and loss.item() == 0.0
    hist.correctness[:] = torch.tensor([2.0, 3, 2, 2])  # m = 2 > M = 1 (late in an epoch)
    loss = crl_loss(logits, torch.arange(4), hist)  # c_bar = c - m = [0, 1, 0, 0], bounded
    assert torch.isfinite(loss) and 0.0 <= loss.item() <= 1.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_correctness_history_update_epochs_and_state() -> None:
    hist = CorrectnessHistory(5)
    hist.update(torch.tensor([0, 2, 4]), torch.tensor([True, False, True]))
    hist.update(torch.tensor([0, 1]), torch.tensor([1, 1]))
    assert hist.correctness.tolist() == [2, 1, 0, 0, 1]
    ms = []
    for epoch in range(1, 6):
        ms.append(hist.max_correctness)  # M used during this epoch
        hist.end_epoch(epoch)
    assert ms == [1, 1, 2, 3, 4]  # 1 during epochs 1-2, then e - 1
    other = CorrectnessHistory(5)
    other.load_state_dict(hist.state_dict())
    assert torch.equal(other.correctness, hist.correctness)
    assert other.max_correctness == hist.max_correctness
    assert all(isinstance(v, torch.Tensor) for v in hist.state_dict().values())


# --------------------------------------------------------------------------------------------
# cosine head


def test_cosine_head_formula_range_and_init() -> None:
    torch.manual_seed(7)
    d, c, tau = 16, 5, 8.0
    head = CosineHead(d, c, temperature=tau)
    assert head.weight.shape == (c, d) and head.bias is None
    assert head.weight.abs().max() <= 1 / math.sqrt(d)
    assert [n for n, _ in head.named_parameters()] == ["weight"]
    assert "temperature" in head.state_dict()
    h = torch.randn(32, d) * 10
    z = head(h)
    ref = tau * F.cosine_similarity(h[:, None, :], head.weight[None, :, :], dim=-1)
    torch.testing.assert_close(z, ref, atol=1e-5, rtol=1e-5)
    assert z.abs().max() <= tau + 1e-5
    # a feature aligned with class 2 gets logit exactly tau
    z2 = head(3.0 * head.weight[2:3].detach())
    assert z2[0, 2].item() == pytest.approx(tau, abs=1e-5)
    # zero feature: eps guard, no NaN
    assert torch.isfinite(head(torch.zeros(1, d))).all()


def test_cosine_head_scale_invariance() -> None:
    torch.manual_seed(8)
    head = CosineHead(12, 4)
    h = torch.randn(6, 12)
    s = torch.rand(6, 1) * 100 + 0.01
    torch.testing.assert_close(head(h * s), head(h), atol=1e-5, rtol=1e-5)


def test_cosine_head_clip_only_in_eval() -> None:
    torch.manual_seed(9)
    head = CosineHead(8, 3, feature_clip=1.0)
    ref = CosineHead(8, 3)
    ref.load_state_dict(head.state_dict())
    h = torch.randn(4, 8) * 5
    head.train()
    torch.testing.assert_close(head(h), ref(h))
    head.eval()
    torch.testing.assert_close(head(h), ref(h.clamp(max=1.0)))
    assert not torch.allclose(head(h), ref(h))


def tiny_deit(num_classes: int = 6) -> nn.Module:
    import timm

    return timm.create_model(
        "deit3_small_patch16_224",
        pretrained=False,
        img_size=28,
        patch_size=7,
        depth=1,
        embed_dim=24,
        num_heads=2,
        num_classes=num_classes,
        in_chans=1,
        init_values=0,
    )


def test_replace_head_on_timm_vit() -> None:
    torch.manual_seed(10)
    model = tiny_deit()
    head = CosineHead(model.num_features, 6, temperature=8.0)
    replace_head(model, head)
    assert model.head is head and model.get_classifier() is head
    assert model.num_classes == 6
    x = torch.randn(2, 1, 28, 28)
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(model(x), head(feats))
    assert model(x).abs().max() <= 8.0 + 1e-5
    with pytest.raises(ValueError):
        replace_head(model, CosineHead(model.num_features + 1, 6))


# --------------------------------------------------------------------------------------------
# SWA


def test_averaged_model_is_mean_of_snapshots() -> None:
    torch.manual_seed(11)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    swa_model, _ = make_swa(model, opt, swa_lr=0.01)
    snaps = []
    for _ in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        snaps.append([p.detach().clone() for p in model.parameters()])
        swa_model.update_parameters(model)
    for i, p in enumerate(swa_model.module.parameters()):
        torch.testing.assert_close(p, torch.stack([s[i] for s in snaps]).mean(0))
    assert int(swa_model.n_averaged) == 4


SPEC_42 = [0.010000, 0.009758, 0.009055, 0.007960, 0.006580, 0.005050, 0.003520, 0.002140,
           0.001045, 0.000342] + [0.000100] * 11  # fmt: skip


def test_swalr_matches_spec_table_on_sam() -> None:
    torch.manual_seed(12)
    model = nn.Linear(3, 2)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.01, momentum=0.9)
    _, sched = make_swa(model, opt, swa_lr=1e-4, anneal_epochs=10)
    used = []
    for epoch in range(1, 22):
        used.append(opt.base_optimizer.param_groups[0]["lr"])
        assert opt.param_groups[0]["lr"] == used[-1]
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step(lambda: F.cross_entropy(model(x), y).backward())
        sched.step()  # once per epoch, after the epoch
        assert swalr_lr(0.01, 1e-4, epoch - 1, 10) == pytest.approx(used[-1], rel=1e-9)
    assert [round(v, 6) for v in used] == SPEC_42


def test_swalr_formula_edge_cases() -> None:
    assert swalr_lr(0.1, 0.01, 0, 0) == 0.01
    assert swalr_lr(0.1, 0.01, 5, 10, "linear") == pytest.approx(0.055)
    with pytest.raises(ValueError):
        swalr_lr(0.1, 0.01, 1, 10, "step")  # type: ignore[arg-type]


def test_maybe_update_bn() -> None:
    class Boom:
        def __iter__(self):
            raise AssertionError("loader must not be iterated for a model without BN")

    vit_like = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    assert maybe_update_bn(Boom(), vit_like) is False
    torch.manual_seed(13)
    cnn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    data = [(torch.randn(8, 3) + 5.0, torch.zeros(8)) for _ in range(3)]
    assert maybe_update_bn(data, cnn) is True
    feats = torch.cat([cnn[0](b[0]) for b in data]).detach()
    torch.testing.assert_close(cnn[1].running_mean, feats.mean(0), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# sure_step


def separable(n: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centers = torch.tensor([[4.0, 0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0, 0], [0, 0, 4.0, 0, 0, 0]])
    x = centers[y] + 0.5 * torch.randn(n, 6, generator=g)
    return x, y


class CosNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU())
        self.head = CosineHead(16, 3, temperature=8.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_sure_step_decreases_loss_and_updates_history() -> None:
    torch.manual_seed(14)
    x, y = separable()
    idx = torch.arange(len(y))
    net = CosNet()
    opt = SAM(net.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9,
              weight_decay=5e-3)  # fmt: skip
    hist = CorrectnessHistory(len(y))
    gen = torch.Generator().manual_seed(0)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    losses, total_correct = [], 0
    for _ in range(15):
        out = sure_step(net, x, y, idx, crit, opt, mixup_weight=0.2, mixup_beta=10.0,
                        crl_weight=1.0, crl_history=hist, generator=gen)  # fmt: skip
        assert math.isfinite(out["loss"]) and math.isfinite(out["loss_pass2"])
        assert out["clean_logits"].shape == (32, 3) and not out["clean_logits"].requires_grad
        losses.append(out["loss"])
        total_correct += out["n_correct"]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert hist.correctness.sum().item() == total_correct
    assert all(p.grad is None for p in net.parameters())


def test_sure_step_equals_hand_sam_regmixup() -> None:
    """sure_step == hand SAM(SGD) whose two passes use the 1st and 2nd (lam, perm) draws."""
    torch.manual_seed(15)
    x, y = separable(12)
    x = x.double()
    net = CosNet().double()
    ref = {k: v.detach().clone() for k, v in net.named_parameters()}
    hp = dict(lr=0.1, momentum=0.9, wd=5e-3)
    opt = SAM(net.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9,
              weight_decay=5e-3)  # fmt: skip
    gen = torch.Generator().manual_seed(42)
    draw_gen = torch.Generator().manual_seed(42)
    bufs: dict[str, torch.Tensor] = {}
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    for _ in range(2):
        draws = [sample_lam_perm(12, 10.0, draw_gen) for _ in range(2)]

        def loss_fn(p, k, draws=draws):
            lam, perm = draws[k]
            z = functional_call(net, p, (x,))
            zm = functional_call(net, p, (lam * x + (1 - lam) * x[perm],))
            mix = lam * hand_ce(zm, y, 0.1) + (1 - lam) * hand_ce(zm, y[perm], 0.1)
            return hand_ce(z, y, 0.1) + 0.2 * mix

        out = sure_step(net, x, y, None, crit, opt, mixup_weight=0.2, mixup_beta=10.0,
                        crl_weight=0.0, crl_history=None, generator=gen)  # fmt: skip
        with torch.no_grad():
            expected_loss = loss_fn(ref, 0).item()
        ref = hand_sam_sgd_step(ref, bufs, loss_fn, rho=0.05, adaptive=False, **hp)
        assert out["loss"] == pytest.approx(expected_loss, abs=1e-10)
        for name, p in net.named_parameters():
            torch.testing.assert_close(p.detach(), ref[name], atol=1e-6, rtol=0)


def test_sure_step_plain_optimizer_single_pass() -> None:
    torch.manual_seed(16)
    x, y = separable(12)
    net = CosNet()
    net2 = copy.deepcopy(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    out = sure_step(net, x, y, None, nn.CrossEntropyLoss(), opt, mixup_weight=0.0,
                    mixup_beta=10.0, crl_weight=0.0, crl_history=None)  # fmt: skip
    assert out["loss_pass2"] is None
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.1)
    F.cross_entropy(net2(x), y).backward()
    opt2.step()
    for p1, p2 in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(p1, p2)


def test_sure_step_nan_raises_and_keeps_weights() -> None:
    torch.manual_seed(17)
    x, y = separable(8)
    x[3, 2] = float("nan")
    net = CosNet()
    before = [p.detach().clone() for p in net.parameters()]
    opt = SAM(net.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    with pytest.raises(FloatingPointError):
        sure_step(net, x, y, None, nn.CrossEntropyLoss(), opt, mixup_weight=0.2,
                  mixup_beta=10.0, crl_weight=0.0, crl_history=None)  # fmt: skip
    for p, b in zip(net.parameters(), before, strict=True):
        assert torch.equal(p, b)


def test_sure_step_sam_rho_zero_equals_base_optimizer() -> None:
    torch.manual_seed(18)
    x, y = separable(12)
    n1 = CosNet()
    n2 = copy.deepcopy(n1)
    kw = dict(lr=0.1, momentum=0.9, weight_decay=5e-3)
    o1 = SAM(n1.parameters(), torch.optim.SGD, rho=0.0, **kw)
    o2 = torch.optim.SGD(n2.parameters(), **kw)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(3):
        for net, opt, gen in ((n1, o1, g1), (n2, o2, g2)):
            out = sure_step(net, x, y, None, nn.CrossEntropyLoss(), opt, mixup_weight=0.2,
                            mixup_beta=10.0, crl_weight=0.0, crl_history=None,
                            generator=gen)  # fmt: skip
            assert out["loss_pass2"] is None
    for p1, p2 in zip(n1.parameters(), n2.parameters(), strict=True):
        assert torch.equal(p1, p2)
