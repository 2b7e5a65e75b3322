"""TRADES' inner maximisation: today's examples bit for bit with the defaults, the L2 ball, the random start."""

import pytest
import torch

from attack.base import eval_mode
from attack.trades import TRADESAttack, pixel_kl
from tests.helpers import TinySeg

EPS, STEPS = 0.03, 3


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = TinySeg(hidden=8, kernel=3, head_kernel=1, dropout=0.5).train()
    x = TRADESAttack(model).normalize(torch.rand(3, 3, 17, 17))
    target = torch.randint(0, 3, (3, 17, 17))
    target[:, :3] = 255
    return model, x, target


def restated_loop(model, images, target, eps=EPS, steps=STEPS):
    """defense/trades.py's crafting loop before it became an attack, restated as it was."""
    pixels = TRADESAttack(model, eps)  # to_pixels / normalize only
    x0 = pixels.to_pixels(images)
    valid = target != 255
    with eval_mode(model):
        with torch.no_grad():
            p_clean = model(images).softmax(1)
        x = (x0 + 0.001 * torch.randn_like(x0)).clamp(0, 1)
        for _ in range(steps):
            x.requires_grad_(True)
            kl = pixel_kl(model(pixels.normalize(x)).log_softmax(1), p_clean, valid)
            (grad,) = torch.autograd.grad(kl, x)
            x = torch.min(torch.max(x.detach() + eps / steps * grad.sign(), x0 - eps), x0 + eps).clamp(0, 1)
    return pixels.normalize(x).detach()


def kl_to_clean(model, x, adv, target) -> float:
    with eval_mode(model), torch.no_grad():
        return pixel_kl(model(adv).log_softmax(1), model(x).softmax(1), target != 255).item()


def test_defaults_give_todays_examples_bit_for_bit(setup):
    model, x, target = setup
    torch.manual_seed(7)
    expected = restated_loop(model, x, target)
    torch.manual_seed(7)
    adv = TRADESAttack(model, EPS, steps=STEPS)(x, target)
    assert torch.equal(adv, expected)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert kl_to_clean(model, x, adv, target) > 10 * kl_to_clean(model, x, x, target) + 1e-3


def test_l2_stays_in_the_ball_of_each_image_and_raises_the_kl(setup):
    model, x, target = setup
    attack = TRADESAttack(model, 0.5, steps=STEPS, norm="l2")
    adv = attack(x, target)
    delta = (attack.to_pixels(adv) - attack.to_pixels(x)).flatten(1).norm(dim=1)
    assert (delta <= 0.5 + 1e-4).all() and (delta > 0.25).all()
    assert not torch.equal(adv, restated_loop(model, x, target, eps=0.5))  # not the L-inf steps
    assert kl_to_clean(model, x, adv, target) > kl_to_clean(model, x, x, target) + 1e-3


@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", 0.5)])
def test_random_start_draws_a_point_of_the_ball(setup, norm, eps):
    model, x, target = setup
    attack = TRADESAttack(model, eps, steps=1, norm=norm, random_start=True)
    x0 = attack.to_pixels(x)
    torch.manual_seed(3)
    start = attack.start(x0)
    delta = (start - x0).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(1)
    assert (size <= eps + 1e-6).all() and (size > 0.1 * eps).all()  # not TRADES' 0.001 * N(0, 1)
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(attack(x, target))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    torch.manual_seed(5)
    assert not torch.equal(runs[0], TRADESAttack(model, eps, steps=1, norm=norm)(x, target))


def test_ignored_pixels_leave_the_image_as_the_start(setup):
    model, x, target = setup
    torch.manual_seed(1)
    adv = TRADESAttack(model, EPS, steps=STEPS)(x, torch.full_like(target, 255))
    torch.manual_seed(1)
    x0 = TRADESAttack(model).to_pixels(x)
    start = (x0 + 0.001 * torch.randn_like(x0)).clamp(0, 1)
    assert torch.allclose(TRADESAttack(model).to_pixels(adv), start, atol=1e-6)  # a zero gradient: sign 0
