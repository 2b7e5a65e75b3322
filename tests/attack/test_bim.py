"""BIM: threat model, loss rises, mode restored, no parameter gradients, ignored pixels do nothing."""

import pytest
import torch
import torch.nn.functional as F

from attack import BIM
from tests.helpers import TinySeg


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = TinySeg(hidden=8, kernel=3, head_kernel=1, dropout=0.5)
    model.train()
    x = BIM(model).normalize(torch.rand(2, 3, 17, 17))
    target = torch.randint(0, 3, (2, 17, 17))
    target[:, :3] = 255
    return model, x, target


def pixels(attack, x):
    return attack.to_pixels(x)


def test_bim_stays_in_threat_model_and_raises_loss(setup):
    model, x, target = setup
    attack = BIM(model)
    adv = attack(x, target)
    x01, adv01 = pixels(attack, x), pixels(attack, adv)
    assert (adv01 - x01).abs().max() <= 0.03 + 1e-5
    assert adv01.min() >= -1e-6 and adv01.max() <= 1 + 1e-6
    model.eval()
    with torch.no_grad():
        clean_loss = F.cross_entropy(model(attack.normalize(x01)), target, ignore_index=255)
        adv_loss = F.cross_entropy(model(adv), target, ignore_index=255)
    assert adv_loss > clean_loss + 0.01


def test_bim_restores_mode_and_leaves_parameters_alone(setup):
    model, x, target = setup
    stats = model.body[1].running_mean.clone()
    BIM(model)(x, target)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(model.body[1].running_mean, stats)
    model.eval()
    BIM(model)(x, target)
    assert not model.training


def test_bim_is_deterministic_and_matches_the_original_update(setup):
    model, x, target = setup
    model.eval()
    adv1, adv2 = BIM(model)(x, target), BIM(model)(x, target)
    assert torch.equal(adv1, adv2)
    # The original: grad of the mean CE w.r.t. the normalized input, step 0.01 in pixel space, clip, twice.
    attack = BIM(model)
    x0 = attack.to_pixels(x)
    cur = x.clone()
    for _ in range(2):
        cur.requires_grad_(True)
        loss = F.cross_entropy(model(cur), target, ignore_index=255)
        (grad,) = torch.autograd.grad(loss, cur)
        step = attack.to_pixels(cur.detach()) + 0.01 * grad.sign()
        step = torch.min(torch.max(step, x0 - 0.03), x0 + 0.03).clamp(0, 1)
        cur = attack.normalize(step)
    assert torch.allclose(adv1, cur, atol=1e-5)


def test_fully_ignored_input_is_left_unchanged(setup):
    model, x, _ = setup
    target = torch.full((2, 17, 17), 255)
    adv = BIM(model)(x, target)
    attack = BIM(model)
    assert torch.allclose(attack.to_pixels(adv), attack.to_pixels(x), atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError):
        BIM(TinySeg(hidden=8, kernel=3, head_kernel=1, dropout=0.5), eps=-1)
    with pytest.raises(ValueError):
        BIM(TinySeg(hidden=8, kernel=3, head_kernel=1, dropout=0.5), steps=0)
