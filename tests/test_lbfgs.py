"""The batched device L-BFGS on problems with known minima (fast, no VGG)."""

from __future__ import annotations

import torch

from dfi_engine import lbfgs


def quadratic(a: torch.Tensor, c: torch.Tensor):
    """f_b(x) = ½ Σ a_b (x_b − c_b)²: independent, ill-conditioned problems per batch element."""

    def fn(x: torch.Tensor):
        r = x - c
        return 0.5 * (a * r * r).flatten(1).sum(1), a * r

    return fn


def rosenbrock(x: torch.Tensor):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        f = (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(1)
        (g,) = torch.autograd.grad(f.sum(), x)
    return f.detach(), g


def test_converges_on_ill_conditioned_quadratics():
    g = torch.Generator().manual_seed(0)
    a = torch.logspace(0, 3, 50).repeat(3, 1)  # condition number 1000
    c = torch.randn(3, 50, generator=g)
    x, f = lbfgs.minimize(quadratic(a, c), torch.zeros(3, 50), 200)
    assert torch.allclose(x, c, atol=1e-3)
    assert (f < 1e-6).all()


def test_rosenbrock():
    x, f = lbfgs.minimize(rosenbrock, torch.full((2, 6), -1.0), 600)
    assert (f < 1e-6).all(), f
    assert torch.allclose(x, torch.ones_like(x), atol=1e-2)


def test_bounds_are_respected_and_active_solution_found():
    a = torch.ones(2, 4)
    c = torch.tensor([[2.0, -2.0, 0.5, 0.2], [5.0, 0.3, -1.0, 0.9]])
    x, _ = lbfgs.minimize(quadratic(a, c), torch.zeros(2, 4), 100, lower=0.0, upper=1.0)
    assert torch.allclose(x, c.clamp(0, 1), atol=1e-5)
    assert x.min() >= 0 and x.max() <= 1


def test_batch_elements_are_independent():
    a = torch.logspace(0, 2, 20).repeat(3, 1)
    c = torch.randn(3, 20, generator=torch.Generator().manual_seed(1))
    c[1] *= 100  # a very different problem next to it must not change element 0's path
    fn = quadratic(a, c)
    x_all, _ = lbfgs.minimize(fn, torch.zeros(3, 20), 15)
    x_one, _ = lbfgs.minimize(quadratic(a[:1], c[:1]), torch.zeros(1, 20), 15)
    assert torch.allclose(x_all[0], x_one[0], atol=1e-6)


def test_monotone_loss_and_callback_every_iteration():
    a = torch.logspace(0, 3, 30).repeat(2, 1)
    c = torch.randn(2, 30, generator=torch.Generator().manual_seed(2))
    seen: list[tuple[int, torch.Tensor]] = []
    lbfgs.minimize(quadratic(a, c), torch.zeros(2, 30), 25, callback=lambda i, f: seen.append((i, f.clone())))
    assert [i for i, _ in seen] == list(range(1, 26))
    losses = torch.stack([f for _, f in seen])
    assert (losses[1:] <= losses[:-1] + 1e-7).all(), "accepted points only: the loss never rises"


def test_torch_baseline_solves_the_same_problem():
    a = torch.logspace(0, 2, 20).unsqueeze(0)
    c = torch.randn(1, 20, generator=torch.Generator().manual_seed(3))
    x, f = lbfgs.minimize_torch(quadratic(a, c), torch.zeros(1, 20), 100)
    assert torch.allclose(x, c, atol=1e-3)


def test_rejected_trial_points_are_counted_per_element():
    """Each rejected trial point leaves that element where it was: the count equals the iterations whose loss
    did not move (Rosenbrock's curved valley makes the line search reject some; the start at the minimum moves
    never and rejects none)."""
    losses: list[torch.Tensor] = []
    stats: dict[str, torch.Tensor] = {}
    start = torch.stack([torch.full((6,), -1.0), torch.ones(6)])
    x, _ = lbfgs.minimize(rosenbrock, start, 120, callback=lambda i, f: losses.append(f.clone()), stats=stats)
    f = torch.stack([rosenbrock(start)[0], *losses])
    stuck = ((f[1:] == f[:-1]) & (f[1:] > 0)).sum(0)
    assert stats["rejected"].tolist() == stuck.tolist()
    assert stats["rejected"][0] > 0 and stats["rejected"][1] == 0
