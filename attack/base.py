"""The attack base class: attacks think in [0, 1] pixel space on batches of normalized inputs.

A subclass only writes :meth:`Attack.perturb`. The base un-normalizes the model's input, runs the model in
eval mode, takes input-only gradients and checks the result: finite, in [0, 1], inside the eps-ball. Each
attack class declares what the registry and the report need (:attr:`Attack.defaults`, ...) and registers
itself under its :attr:`Attack.name` in :data:`ATTACKS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from types import MappingProxyType
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from util.config import IMAGENET_MEAN, IMAGENET_STD
from util.registry import Registry

# The config's attack names -> their classes; each class with a ``name`` registers itself when defined.
ATTACKS: Registry[type[Attack]] = Registry("attack")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode (BN running statistics untouched, no dropout), then
    restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def label_margin(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel the logit margin z_y - max_{j != y} z_j (0 on ignored pixels) and the runner-up class
    argmax_{j != y} z_j (``ignore_index`` on ignored pixels): the nearest other class in logits, shared by
    C&W's loss, DeepFool's boundary, DAG's and targeted CosPGD's target map."""
    valid = target != ignore_index
    safe = torch.where(valid, target, 0)
    z_y = logits.gather(1, safe[:, None])[:, 0]
    others = logits.scatter(1, safe[:, None], float("-inf"))
    z_other, runner_up = others.max(1)
    return (z_y - z_other) * valid, torch.where(valid, runner_up, ignore_index)


def linf_ball(x: torch.Tensor, x0: torch.Tensor, radius: float) -> torch.Tensor:
    """Project onto the L-inf ball of ``radius`` around ``x0`` and onto [0, 1]."""
    return torch.min(torch.max(x, x0 - radius), x0 + radius).clamp_(0.0, 1.0)


class Attack:
    """Base class of all attacks.

    Args:
        model: segmentation model returning logits (N, C, h, w) in eval mode (unwrapped, not DDP).
        eps: radius of the L-inf ball in [0, 1] pixel units.
        ignore_index: label value that contributes no loss.
        mean: per-channel mean of the model's input normalization, as fractions of 1.
        std: per-channel std of the model's input normalization, as fractions of 1.
        forward: what to attack instead of ``model(x)`` (normalized input -> logits), e.g. one head
            of a multi-head model; it runs while ``model`` is in eval mode.
        train_mode: run the model in train mode instead (BN on batch statistics, updating its running ones;
            dropout on), as SAM-AT's training attack does; evaluation attacks never do.
        normalize_input: feed the model normalized pixels (always, except to restate SAM-AT's training attack,
            which feeds the [0, 1] pixels as they are).
    """

    name = ""  # the config's ``name`` of the attack; a class with a name registers itself in ATTACKS
    # Every config field (constructor argument a config entry may set) -> its default; the constructor reads it.
    defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    fields: ClassVar[frozenset[str]] = frozenset()  # the keys of ``defaults``
    iterative = False  # maximises a loss step by step in the eps-ball: more steps must not make it weaker
    min_norm = False  # looks for the smallest perturbation that fools the model (without eps: unclipped)
    norm = "linf"  # threat model: "linf" or "l2" (per image)
    # Raised when the attack's results change for the same spec, so that stored predictions of the older
    # code are not reused (test.py's prediction fingerprint).
    revision = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.fields = frozenset(cls.defaults)
        if "name" in vars(cls) and cls.name:
            ATTACKS.register(cls.name)(cls)

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        ignore_index: int = 255,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
        train_mode: bool = False,
        normalize_input: bool = True,
    ) -> None:
        Attack.validate(eps=eps)
        self.model = model
        self.forward = forward or model
        self.train_mode = train_mode
        self.normalize_input = normalize_input
        self._given: tuple[torch.Tensor, torch.Tensor] | None = None  # (clean pixels, the caller's input) in a call
        self.eps = eps
        self.ignore_index = ignore_index
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    @classmethod
    def validate(cls, **values: Any) -> None:
        """Raise what the constructor raises for these values, without building the attack.

        Args:
            values: field values (and other constructor arguments); one not given is its default.

        Raises:
            ValueError: a value the attack cannot run with (TypeError: one of the wrong type).
        """
        v = {**cls.defaults, **values}
        if v["eps"] < 0:
            raise ValueError(f"eps must be >= 0, got {v['eps']}")
        if "norm" in cls.defaults and v["norm"] not in ("linf", "l2"):  # an attack with a choice of threat model
            raise ValueError(f"norm must be 'linf' or 'l2', got {v['norm']!r}")

    @classmethod
    def members(cls, params: Mapping[str, Any]) -> list[tuple[str, str, dict]]:
        """An ensemble's members for its entry's ``params``: (label suffix, attack name, their params); [] else."""
        return []

    @classmethod
    def takes_class_weights(cls, params: Mapping[str, Any]) -> bool:
        """Whether a spec with ``params`` runs a balanced masked CE, which needs a class table."""
        return False

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized input -> [0, 1] pixels."""
        return x * self.std.to(x) + self.mean.to(x)

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels -> the model's normalized input."""
        return (x01 - self.mean.to(x01)) / self.std.to(x01)

    def logits(self, x01: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Model logits for pixel input, bilinearly resized to the label size when the model zooms."""
        inp = self.normalize(x01) if self.normalize_input else x01
        given = self._given
        if (
            given is not None
            and self.normalize_input
            and x01.shape == given[0].shape
            and torch.equal(x01.detach(), given[0])
        ):
            inp = given[1] + (inp - inp.detach())  # the caller's input bit for bit, as the original's first step
        out = self.forward(inp)
        if isinstance(out, dict):  # a model in train mode (train_mode)
            out = out["out"]
        if out.shape[-2:] != tuple(size):
            out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=True)
        return out

    def ce_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Summed pixel cross-entropy without ignored pixels (its sign-gradient equals the mean's; an
        all-ignored crop gives zero gradient instead of NaN)."""
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum")

    def input_grad(self, loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """d loss / d x only; no parameter gradient is computed or stored."""
        (grad,) = torch.autograd.grad(loss, x)
        return grad

    def project(self, x01: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Project onto the eps-ball around ``x0`` (L-inf: clip; L2: rescale per image) and [0, 1]."""
        if self.norm == "l2":
            delta = x01 - x0
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            return (x0 + delta * (self.eps / norms).clamp(max=1.0)).clamp_(0.0, 1.0)
        return linf_ball(x01, x0, self.eps)

    def pixel_accuracy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image accuracy over non-ignored pixels (1 for an image without labelled pixels)."""
        valid = target != self.ignore_index
        correct = ((logits.argmax(1) == target) & valid).flatten(1).sum(1)
        total = valid.flatten(1).sum(1)
        return torch.where(total > 0, correct / total.clamp_min(1), torch.ones_like(correct, dtype=torch.float))

    def perturb(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return adversarial pixels for clean pixels ``x0`` (N, 3, H, W) in [0, 1] and labels (N, H, W)."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Attack a normalized batch; returns the normalized adversarial batch (detached)."""
        x0 = self.to_pixels(x.detach())
        self._given = (x0, x.detach())
        try:
            with nullcontext() if self.train_mode else eval_mode(self.model), torch.enable_grad():
                adv = self.perturb(x0, target.long()).detach()
        finally:
            self._given = None
        self.check(adv, x0)
        return self.normalize(adv)

    def check(self, adv: torch.Tensor, x0: torch.Tensor) -> None:
        """Fail loudly if the attack left the threat model."""
        tol = 1e-5
        if not torch.isfinite(adv).all():
            raise RuntimeError(f"{type(self).__name__} produced non-finite pixels")
        if adv.min() < -tol or adv.max() > 1 + tol:
            raise RuntimeError(f"{type(self).__name__} left [0, 1]: range [{adv.min():.4f}, {adv.max():.4f}]")
        delta = adv - x0.clamp(0, 1)
        if not delta.numel():
            return
        if self.norm == "l2":
            dist = delta.flatten(1).norm(dim=1).max().item()
            tol = 1e-4 * max(1.0, self.eps)
        else:
            dist = delta.abs().max().item()
        if dist > self.eps + tol:
            raise RuntimeError(
                f"{type(self).__name__} left the eps-ball: |delta|_{self.norm} = {dist:.5f} > {self.eps}"
            )


class MinNormAttack(Attack):
    """Base of minimum-norm attacks (DAG, C&W, DeepFool): :meth:`minimize` looks for the smallest
    perturbation that fools the model, without a budget; :meth:`perturb` projects it onto the eps-ball.

    ``eps = inf`` (the default) returns the unclipped result, a finite eps the same attack clipped to the
    ball, as the DDC-AT paper reports it. The unclipped per-image norms are kept (``last_norms``,
    :meth:`take_norms`, :meth:`median_norm`).
    """

    min_norm = True

    def __init__(self, model: nn.Module, eps: float = float("inf"), ignore_index: int = 255, **kwargs) -> None:
        super().__init__(model, eps, ignore_index, **kwargs)
        self.last_unclipped: torch.Tensor | None = None
        self.last_norms: torch.Tensor | None = None
        self._norms: list[torch.Tensor] = []

    def minimize(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The unclipped adversarial pixels in [0, 1] for clean pixels ``x0`` and labels ``target``."""
        raise NotImplementedError

    def perturb(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        adv = self.minimize(x0, target).detach().clamp(0.0, 1.0)
        order = 2 if self.norm == "l2" else float("inf")
        self.last_unclipped = adv
        self.last_norms = (adv - x0).flatten(1).norm(p=order, dim=1)
        self._norms.append(self.last_norms.cpu())
        return self.project(adv, x0)

    def take_norms(self) -> list[float]:
        """The unclipped per-image norms of all calls since the last take, oldest first."""
        norms = torch.cat(self._norms).tolist() if self._norms else []
        self._norms = []
        return norms

    def still_correct(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The active set of DAG and DeepFool: non-ignored pixels still predicted as their label."""
        return (logits.detach().argmax(1) == target) & (target != self.ignore_index)

    def median_norm(self) -> float:
        """Median over images of the last call's unclipped perturbation norm."""
        if self.last_norms is None:
            raise RuntimeError(f"{type(self).__name__} has not been called yet")
        return self.last_norms.median().item()
