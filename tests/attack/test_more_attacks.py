"""PAdam, DAG, C&W, DeepFool and targeted CosPGD: threat model (clipped and unclipped), strength on a trained
tiny model, seeds, ignored pixels, untouched parameters, hand computations on linear models, registry."""

import pytest
import torch
from torch import nn

from attack import CW, DAG, CosPGD, DeepFool, PAdam
from attack.base import label_margin
from attack.cw import margin_loss
from attack.registry import build_attack, parse_specs
from tests.helpers import accuracy, check_attack, check_deterministic
from util.errors import UserError

EPS = 8 / 255
IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # the model sees [0, 1] pixels

ATTACKS = {
    "padam_ce": lambda m, **k: PAdam(m, eps=EPS, steps=10, **k),
    "padam_cosine": lambda m, **k: PAdam(m, eps=EPS, steps=10, loss="cosine", **k),
    "dag": lambda m, **k: DAG(m, steps=60, **k),
    "dag_eps": lambda m, **k: DAG(m, eps=EPS, steps=60, **k),
    "cw": lambda m, **k: CW(m, steps=30, search_steps=3, **k),
    "cw_eps": lambda m, **k: CW(m, eps=1.0, steps=30, search_steps=3, **k),
    "deepfool": lambda m, **k: DeepFool(m, steps=20, **k),
    "deepfool_linf_eps": lambda m, **k: DeepFool(m, eps=EPS, steps=20, norm="linf", **k),
    "cospgd_targeted": lambda m, **k: CosPGD(m, eps=EPS, steps=10, targeted=True, **k),
}


def _linear():
    """A 1x1-conv linear two-class model with known weights; w_0 - w_1 = (1, -2, -2), ||.||_2 = 3."""
    model = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 1.0]]).view(2, 3, 1, 1))
        model.bias.copy_(torch.tensor([0.3, 0.0]))
    # Two pixels labelled 1 with f = z_0 - z_1 = -0.9 and -1.2: L2 distances 0.3 and 0.4 to the boundary.
    x0 = torch.tensor([[0.5, 0.6], [0.4, 0.5], [0.45, 0.55]]).view(1, 3, 1, 2)
    return model.eval(), x0, torch.ones(1, 1, 2, dtype=torch.long)


DW = torch.tensor([1.0, -2.0, -2.0])  # gradient of z_0 - z_1 per pixel
F0 = torch.tensor([-0.9, -1.2])


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_stays_in_its_ball_and_lowers_accuracy(trained, name):
    attack, x01, adv01 = check_attack(ATTACKS[name], trained, name)
    if hasattr(attack, "last_norms"):  # minimum-norm: the clipped result is the unclipped one projected
        assert torch.allclose(adv01, attack.project(attack.last_unclipped, x01), atol=1e-5)
        assert attack.median_norm() == attack.last_norms.median().item() > 0
        if attack.eps == float("inf"):
            assert torch.allclose(adv01, attack.last_unclipped, atol=1e-5)
        else:
            assert (attack.last_norms > attack.eps).any()  # the ball did clip something


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_is_deterministic_for_a_seed(trained, name):
    check_deterministic(ATTACKS[name], trained, name.startswith(("padam", "cospgd")))


@pytest.mark.parametrize("name", ATTACKS)
def test_ignored_pixels_do_not_count(trained, name):
    """The value marking ignored pixels changes nothing, and an all-ignored batch is left as it is."""
    model, x, target = trained
    other = torch.where(target == 255, 254, target)
    torch.manual_seed(2)
    a = ATTACKS[name](model)(x, target)
    torch.manual_seed(2)
    b = ATTACKS[name](model, ignore_index=254)(x, other)
    assert torch.equal(a, b)
    kwargs = {"random_start": False} if name.startswith(("padam", "cospgd")) else {}
    adv = ATTACKS[name](model, **kwargs)(x, torch.full_like(target, 255))
    assert torch.allclose(adv, x, atol=1e-5)


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_restores_train_mode_and_leaves_parameters_alone(trained, name):
    model, x, target = trained
    stats = model.body[1].running_mean.clone()
    model.train()
    try:
        ATTACKS[name](model)(x, target)
        assert model.training
    finally:
        model.eval()
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(model.body[1].running_mean, stats)


def test_padam_first_step_is_the_learning_rate_times_the_gradient_sign():
    """AMSGrad's first step is lr * g / (|g| + 1e-8): one step of 0.2 along sign((w_0 - w_1)) flips pixel 0
    (needs 0.9 / ||w_0 - w_1||_1 = 0.18) but not pixel 1 (needs 0.24), so that iterate is kept."""
    model, x0, target = _linear()
    attack = PAdam(model, eps=0.2, steps=1, alpha=0.2, random_start=False, **IDENTITY)
    adv = attack(x0, target)
    assert torch.allclose(adv - x0, 0.2 * DW.sign().view(1, 3, 1, 1).expand_as(x0), atol=1e-6)
    assert model(adv).argmax(1).tolist() == [[[0, 1]]]


def test_padam_direction_is_torch_amsgrad():
    """PAdam's direction over several steps equals torch.optim.Adam(amsgrad=True, maximize=True) with lr 1,
    for gradients that shrink so that AMSGrad's running maximum of v matters."""
    attack = PAdam(nn.Identity())
    attack.start(torch.zeros(1, 3, 2, 2))
    param = torch.zeros(1, 3, 2, 2, requires_grad=True)
    optimizer = torch.optim.Adam([param], lr=1.0, amsgrad=True, maximize=True)
    g = torch.Generator().manual_seed(0)
    for scale in (1.0, 0.01, 0.5, 0.001):
        grad = scale * torch.randn(1, 3, 2, 2, generator=g)
        before = param.detach().clone()
        param.grad = grad.clone()
        optimizer.step()
        assert torch.allclose(attack.ascent(grad), param.detach() - before, atol=1e-6)


def test_padam_cosine_loss_by_hand():
    attack = PAdam(nn.Identity(), loss="cosine")
    logits = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]]])
    target = torch.tensor([[[0, 1, 255]]])
    p = logits.softmax(1)[0, :, 0]
    cos = [p[0, 0] / p[:, 0].norm(), p[1, 1] / p[:, 1].norm()]
    assert attack.loss(logits, target, 0).item() == pytest.approx(-(cos[0] + cos[1]).item() / 3, rel=1e-6)


def test_dag_steps_gamma_along_the_normalized_gradient_until_each_pixel_flips():
    """With gamma 0.007 each step adds 0.007 * (w_0 - w_1) / 2 to each active pixel and raises its f by
    0.007 * 9 / 2; pixel 0 flips after ceil(0.9 / 0.0315) = 29 steps, pixel 1 after ceil(1.2 / 0.0315) = 39."""
    model, x0, target = _linear()
    attack = DAG(model, gamma=0.007, **IDENTITY)
    adv = attack(x0, target)
    expected = torch.stack([29 * 0.007 * DW / 2, 39 * 0.007 * DW / 2], dim=1).view(1, 3, 1, 2)
    assert torch.allclose(adv - x0, expected, atol=1e-5)
    assert attack.last_norms.item() == pytest.approx(39 * 0.007, rel=1e-5)


def test_dag_adversarial_labels_are_the_runner_up_classes():
    logits = torch.tensor([[[[3.0, 0.0]], [[1.0, 5.0]], [[2.0, 4.0]]]])  # (1, 3 classes, 1, 2)
    margin, runner_up = label_margin(logits, torch.tensor([[[0, 255]]]), 255)
    assert runner_up.tolist() == [[[2, 255]]] and margin.tolist() == [[[1.0, 0.0]]]


def test_cw_margin_loss_by_hand():
    logits = torch.tensor([[[[3.0, 0.0, 1.0, 9.0]], [[1.0, 5.0, 1.5, 0.0]], [[2.0, 4.0, 0.0, 0.0]]]])
    target = torch.tensor([[[0, 0, 0, 255]]])  # margins 3 - 2 = 1, 0 - 5 = -5, 1 - 1.5 = -0.5, ignored
    assert margin_loss(logits, target, 255).item() == pytest.approx(1 / 4)  # kappa 0: fooled pixels give 0
    assert margin_loss(logits, target, 255, kappa=1.0).item() == pytest.approx((1 - 1 - 0.5) / 4)
    assert margin_loss(logits, target, 255, kappa=10.0).item() == pytest.approx((1 - 5 - 0.5) / 4)


def test_cw_finds_the_analytic_minimum_norm_on_a_linear_model():
    """Fooling both pixels needs at least sqrt(0.3^2 + 0.4^2) = 0.5 in L2; C&W gets within 4 %. Clipped to
    an L2 ball of 0.3 it returns the same direction scaled to 0.3."""
    model, x0, target = _linear()
    attack = CW(model, success_acc=0.0, **IDENTITY)
    adv = attack(x0, target)
    assert model(adv).argmax(1).tolist() == [[[0, 0]]]
    assert 0.5 - 1e-4 <= attack.median_norm() <= 0.52
    clipped = CW(model, eps=0.3, success_acc=0.0, **IDENTITY)(x0, target)
    assert (clipped - x0).norm().item() == pytest.approx(0.3, rel=1e-4)
    assert torch.allclose(clipped - x0, (adv - x0) * 0.3 / (adv - x0).norm(), atol=1e-4)


def test_cw_keeps_the_lowest_accuracy_when_it_never_succeeds(trained):
    model, x, target = trained
    attack = CW(model, steps=5, search_steps=1, c=0.01, success_acc=0.0)
    adv = attack(x, target)
    assert accuracy(model, adv, target) < accuracy(model, x, target)


def test_deepfool_steps_each_pixel_onto_its_boundary_with_overshoot():
    """Orthogonal pixel gradients of equal norm: one step moves pixel p by 1.02 * |f_p| / 9 * (w_0 - w_1),
    i.e. 2 % beyond its boundary; the L2 norm is 1.02 * 0.5. L-inf, one pixel: 1.02 * 0.9 / 5 per channel."""
    model, x0, target = _linear()
    attack = DeepFool(model, steps=1, **IDENTITY)
    adv = attack(x0, target)
    expected = 1.02 * torch.outer(DW, F0.abs()) / 9
    assert torch.allclose(adv - x0, expected.view(1, 3, 1, 2), atol=1e-6)
    f = model(adv)[0, 0, 0] - model(adv)[0, 1, 0]
    assert torch.allclose(f, 0.02 * F0.abs(), atol=1e-5)
    assert attack.median_norm() == pytest.approx(0.51, rel=1e-5)
    attack = DeepFool(model, norm="linf", **IDENTITY)
    adv = attack(x0[..., :1], target[..., :1])
    assert torch.allclose((adv - x0[..., :1]).flatten(), 1.02 * 0.9 / 5 * DW.sign(), atol=1e-6)


def test_deepfool_on_the_image_is_close_to_deepfool_per_pixel(trained):
    """The trained model is 1x1-conv, so its pixels are independent classifiers: the image-level DeepFool
    norm should be near the norm of per-pixel DeepFool run on every pixel as its own 1x1 image."""
    model, x, target = trained
    attack = DeepFool(model, steps=50)
    attack(x, target)
    whole = attack.last_norms
    n, c, h, w = x.shape
    pixels = attack.to_pixels(x).permute(0, 2, 3, 1).reshape(-1, c, 1, 1)
    attack(attack.normalize(pixels), target.reshape(-1, 1, 1))
    per_pixel = attack.last_norms.view(n, h * w).pow(2).sum(1).sqrt()
    assert (whole >= 0.9 * per_pixel).all() and (whole <= 1.1 * per_pixel).all()


def test_targeted_cospgd_weights_and_direction(trained):
    attack = CosPGD(nn.Identity(), targeted=True)
    logits = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]]])
    y_star = torch.tensor([[[1, 1, 255]]])
    p = logits.softmax(1)[0, :, 0]
    expected = [1 - p[1, i].item() / p[:, i].norm().item() for i in range(2)]
    assert attack.weights(logits, y_star)[0, 0].tolist() == pytest.approx([*expected, 0.0], rel=1e-6)
    # On the trained model more pixels take their target (runner-up) class than on the clean image.
    model, x, target = trained
    torch.manual_seed(0)
    attack = CosPGD(model, eps=EPS, steps=10, targeted=True)
    adv = attack(x, target)
    valid = target != 255
    with torch.no_grad():
        hits = [((model(z).argmax(1) == attack.adv_target) & valid).sum().item() for z in (x, adv)]
        untargeted = CosPGD(model, eps=EPS, steps=10, random_start=False)
        assert not untargeted.targeted and untargeted.loss(model(x), target, 0) > 0
    assert hits[1] > hits[0] + 0.1 * valid.sum().item()


def test_registry_parses_and_builds_the_new_attacks():
    specs = parse_specs(
        [
            {"name": "padam", "eps": 8, "steps": 5, "alpha": 2, "loss": "cosine"},
            {"name": "dag", "gamma": 0.5},
            {"name": "cw", "eps": [float("inf"), 0.5], "unit": 1},
            {"name": "deepfool", "eps": 4, "norm": "linf", "overshoot": 0.05},
            {"name": "cospgd", "eps": 8, "targeted": True},
        ]
    )
    assert [s.label for s in specs] == [
        "padam_eps8",
        "dag_epsinf",
        "cw_epsinf",
        "cw_eps0.5",
        "deepfool_eps4",
        "cospgd_eps8",
    ]
    assert specs[0].params["alpha"] == pytest.approx(2 / 255) and specs[1].params["gamma"] == pytest.approx(0.5 / 255)
    assert specs[1].eps == float("inf") and specs[3].eps == 0.5
    model = nn.Conv2d(3, 2, 1)
    built = [build_attack(s, model) for s in specs]
    assert [type(a) for a in built] == [PAdam, DAG, CW, CW, DeepFool, CosPGD]
    assert built[0].loss_name == "cosine" and built[0].alpha == pytest.approx(2 / 255)
    assert built[4].norm == "linf" and built[4].eps == pytest.approx(4 / 255) and built[5].targeted


@pytest.mark.parametrize(
    "entry,needle",
    [
        ({"name": "padam", "eps": 8, "loss": "dice"}, "loss must be one of"),
        ({"name": "padam", "eps": 8, "norm": "l2"}, "padam has no field 'norm'"),
        ({"name": "padam"}, "eps must be numbers >= 0"),
        ({"name": "dag", "gamma": "fast"}, "gamma must be a number"),
        ({"name": "dag", "gamma": -1}, "gamma must be a number > 0, got -1"),
        ({"name": "cw", "search_steps": 0}, "search_steps must be a whole number >= 1"),
        ({"name": "cw", "success_acc": 2}, "0 <= success_acc <= 1"),
        ({"name": "cw", "steps": "many"}, "steps must be a whole number >= 1, got 'many'"),
        ({"name": "pgd", "eps": 8, "steps": 2.5}, "steps must be a whole number >= 1, got 2.5"),
        ({"name": "pgd", "eps": 8, "restarts": 0}, "restarts must be a whole number >= 1"),
        ({"name": "bim", "eps": 8, "alpha": -1}, "alpha must be a number > 0, got -1"),
        ({"name": "bim", "eps": 8, "unit": 0}, "unit must be a number > 0"),
        ({"name": "pgd", "eps": []}, "eps is an empty list"),
        ({"name": "deepfool", "norm": "l1"}, "norm must be 'linf' or 'l2'"),
        ({"name": "cospgd", "eps": 8, "targeted": "yes"}, "targeted must be true or false"),
    ],
)
def test_registry_rejects_bad_fields_and_values(entry, needle):
    with pytest.raises(UserError, match=needle) as err:
        for spec in parse_specs([entry]):
            build_attack(spec, nn.Conv2d(3, 2, 1))
    assert "\n" not in str(err.value)


def test_sea_gives_its_class_weights_to_the_balanced_member_only():
    (sea,) = parse_specs([{"name": "sea", "eps": 8, "steps": 3, "class_weights": [0.2, 0.8]}])
    members = sea.attack_class.members(sea.params)
    weights = {suffix: params.get("class_weights") for suffix, _, params in members}
    assert weights == {"balanced_masked_ce": [0.2, 0.8], "masked_ce": None, "js": None}
    assert [(name, params["loss"], params["steps"]) for suffix, name, params in members] == [
        ("apgd", suffix, 3) for suffix in weights
    ]
    attack = build_attack(sea, nn.Conv2d(3, 2, 1))
    assert [member.loss_name for member in attack.member_attacks] == list(weights)
    assert attack.member_attacks[0].class_weights.tolist() == pytest.approx([0.2, 0.8])
    assert [member.class_weights for member in attack.member_attacks[1:]] == [None, None]
