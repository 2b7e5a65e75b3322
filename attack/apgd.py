"""APGD with segmentation losses and the multi-radius schedule of SEA, as Croce et al.'s code runs them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attack.base import Attack, linf_ball

LOSSES = ("ce", "masked_ce", "balanced_masked_ce", "js", "masked_spherical", "segpgd")
SEA_STAGES = ((0.3, 2.0), (0.3, 1.5), (0.4, 1.0))  # (fraction of iterations, radius / eps) per stage


def checkpoints(iterations: int) -> list[int]:
    """The iterations after which APGD checks its step size, as Croce et al.'s segmentation code places
    them in a run of ``iterations``: the first after max(int(0.22 n), 1), then at intervals that shrink
    by max(int(0.03 n), 1) down to max(int(0.06 n), 1)."""
    interval, shrink, least = (max(int(share * iterations), 1) for share in (0.22, 0.03, 0.06))
    marks = [interval]
    while True:
        interval = max(interval - shrink, least)
        if marks[-1] + interval > iterations:
            return marks
        marks.append(marks[-1] + interval)


def pixel_losses(
    name: str,
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    step: int = 0,
    steps: int = 1,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-image loss (N,) averaged over the image's pixels; ignored pixels contribute 0.

    ce: cross-entropy. masked_ce: CE on still-correct pixels only. balanced_masked_ce: masked CE with
    each pixel weighted by ``class_weights`` of its class (C,), or without them by 1 / its class's pixel
    count in the image. js: Jensen-Shannon divergence between
    softmax and one-hot. masked_spherical: -z_y / ||z||_2 on still-correct pixels. segpgd: SegPGD's
    (1 - l) * CE on correct + l * CE on wrong pixels, l = step / (2 * steps).
    """
    valid = target != ignore_index
    safe = torch.where(valid, target, 0)
    hw = target.shape[-2] * target.shape[-1]
    correct = (logits.detach().argmax(1) == safe) & valid
    ce = F.cross_entropy(logits, safe, reduction="none") * valid
    if name == "ce":
        per_pixel = ce
    elif name == "masked_ce":
        per_pixel = ce * correct
    elif name == "balanced_masked_ce" and class_weights is not None:
        per_pixel = ce * correct * class_weights.to(ce)[safe]
    elif name == "balanced_masked_ce":
        classes = logits.shape[1]
        onehot = F.one_hot(safe, classes) * valid[..., None]  # (N, H, W, C)
        counts = onehot.flatten(1, 2).sum(1)  # (N, C)
        present = (counts > 0).sum(1).clamp_min(1).view(-1, 1, 1)
        weight = (onehot / counts.clamp_min(1)[:, None, None, :]).sum(-1) * hw / present
        per_pixel = ce * correct * weight
    elif name == "js":
        p = logits.softmax(1)
        q = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).to(p)
        m = (p + q) / 2
        kl_p = (p * (p.clamp_min(1e-12).log() - m.clamp_min(1e-12).log())).sum(1)
        kl_q = (q * (q.clamp_min(1e-12).log() - m.clamp_min(1e-12).log())).sum(1)
        per_pixel = 0.5 * (kl_p + kl_q) * valid
    elif name == "masked_spherical":
        z_y = logits.gather(1, safe[:, None])[:, 0]
        per_pixel = -z_y / logits.norm(dim=1).clamp_min(1e-12) * correct
    elif name == "segpgd":
        lam = step / (2 * steps)
        per_pixel = ((1 - lam) * correct + lam * (valid & ~correct)) * ce
    else:
        raise ValueError(f"unknown APGD loss {name!r}; expected one of {LOSSES}")
    return per_pixel.flatten(1).sum(1) / hw


def inverse_frequency_weights(counts: Sequence[int]) -> list[float]:
    """The official code's class table of ``balanced_masked_ce`` (its ``VOC_WTS``) from the pixels per class of
    a dataset's labels: 1 / each class's pixel count, normalised to sum 1 (a class without pixels counts one);
    why a dataset table and not per-image counts: docs/attack_fidelity.md."""
    inverse = [1.0 / max(int(c), 1) for c in counts]
    return [round(w / sum(inverse), 8) for w in inverse]


class APGD(Attack):
    """Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020), L-inf, with segmentation losses and the radius schedule of SEA
    (Croce et al., "Towards Reliable Evaluation and Fast Training of Robust Semantic Segmentation Models",
    ECCV 2024), run as their code (``apgd_largereps``) runs it: the schedule in docs/evaluation.md, each
    difference from the official code in docs/attack_fidelity.md.

    Returns per image the iterate of the final ball with the lowest pixel accuracy (ties go to the later one).

    Args:
        model: segmentation model (logits in eval mode).
        eps: final L-inf radius in [0, 1] pixel units.
        steps: total iterations over all stages.
        loss: the loss whose gradient is followed, one of :data:`LOSSES`.
        stages: (fraction of iterations, radius / eps) per stage.
        momentum: APGD's alpha.
        rho: fraction of tracked-loss increases at or below which the step is halved.
        track: the loss that controls the step size, one of :data:`LOSSES`.
        random_start: start from a random point of the first ball instead of the clean image.
        class_weights: per-class weights (C,) of ``balanced_masked_ce``, as the official code's fixed dataset
            table (:func:`inverse_frequency_weights` of the training labels; test.py computes it for ``train``,
            its default); None or ``'image'`` weights each class by 1 / its pixel count in the image.
    """

    name = "apgd"
    defaults = MappingProxyType(
        {
            "eps": 8 / 255,
            "steps": 300,
            "loss": "masked_ce",
            "momentum": 0.75,
            "rho": 0.75,
            "track": "ce",
            "random_start": True,
            "class_weights": None,
        }
    )
    iterative = True

    revision = 2  # 2: the official schedule (docs/attack_fidelity.md)

    def __init__(
        self,
        model: nn.Module,
        eps: float = defaults["eps"],
        steps: int = defaults["steps"],
        loss: str = defaults["loss"],
        stages: tuple[tuple[float, float], ...] = SEA_STAGES,
        momentum: float = defaults["momentum"],
        rho: float = defaults["rho"],
        track: str = defaults["track"],
        random_start: bool = defaults["random_start"],
        class_weights: Sequence[float] | str | None = defaults["class_weights"],
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, ignore_index, **kwargs)
        APGD.validate(eps=eps, steps=steps, loss=loss, stages=stages, track=track, class_weights=class_weights)
        if class_weights == "image":
            class_weights = None
        self.class_weights = None if class_weights is None else torch.tensor([float(w) for w in class_weights])
        self.steps = steps
        self.loss_name = loss
        self.track = track
        self.stages = stages
        self.momentum = momentum
        self.rho = rho
        self.random_start = random_start
        self.schedule: list[torch.Tensor] = []  # per-image step sizes after each checkpoint of the last call

    @classmethod
    def validate(cls, **values: Any) -> None:
        super().validate(**values)
        v = {**cls.defaults, "stages": SEA_STAGES, **values}
        for name in ("loss", "track"):
            if v[name] not in LOSSES:
                raise ValueError(f"{name} must be one of {LOSSES}, got {v[name]!r}")
        class_weights = v["class_weights"]
        if class_weights == "image":
            class_weights = None
        if class_weights is not None and (
            isinstance(class_weights, (str, bytes))
            or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w < float("inf") for w in class_weights
            )
            or not any(class_weights)
        ):
            raise ValueError(
                f"class_weights must be a list of numbers >= 0 (one per class), 'image', or 'train' "
                f"(test.py: the training labels' table), got {class_weights!r}"
            )
        if v["steps"] < len(v["stages"]):
            raise ValueError(f"APGD needs at least one step per stage, got steps={v['steps']}")

    @classmethod
    def takes_class_weights(cls, params: Mapping[str, Any]) -> bool:
        return params.get("loss") == "balanced_masked_ce" or "class_weights" in params

    def stage_iterations(self) -> list[int]:
        """Iterations per stage: int(fraction * steps), the last stage takes the rest (as the official)."""
        counts = [max(1, int(fraction * self.steps)) for fraction, _ in self.stages[:-1]]
        return [*counts, self.steps - sum(counts)]

    def perturb(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            best_acc = self.pixel_accuracy(self.logits(x0, target.shape[-2:]), target)
        best = x0.clone()
        x = x0
        if self.random_start:
            first = self.eps * self.stages[0][1]
            x = (x0 + first * (2 * torch.rand_like(x0) - 1)).clamp(0.0, 1.0)
        done = 0
        self.schedule = []
        for iterations, (_, scale) in zip(self.stage_iterations(), self.stages):
            radius = self.eps * scale
            x, acc = self._stage(linf_ball(x, x0, radius), x0, target, radius, iterations, done)
            done += iterations
            if radius <= self.eps:  # only points of the final ball can be returned
                better = acc <= best_acc
                best[better], best_acc[better] = x[better], acc[better]
        return best

    def _evaluate(self, x: torch.Tensor, target: torch.Tensor, step: int, need_grad: bool = True):
        """(tracked loss, gradient of the attacked loss or None, pixel accuracy) per image at ``x``."""
        x = x.detach().requires_grad_(need_grad)
        with torch.set_grad_enabled(need_grad):
            logits = self.logits(x, target.shape[-2:])
            grad = None
            if need_grad:
                attacked = pixel_losses(
                    self.loss_name, logits, target, self.ignore_index, step, self.steps, self.class_weights
                )
                grad = self.input_grad(attacked.sum(), x)
        logits = logits.detach()
        tracked = pixel_losses(self.track, logits, target, self.ignore_index, step, self.steps)
        return tracked, grad, self.pixel_accuracy(logits, target)

    def _stage(self, x, x0, target, radius, iterations, offset) -> tuple[torch.Tensor, torch.Tensor]:
        """One APGD run of ``iterations`` in the ``radius`` ball around ``x0`` from ``x``: per image the
        lowest-accuracy iterate (the start included) and its accuracy."""
        n = x0.shape[0]
        out, out_acc = x.clone(), torch.full((n,), float("inf"), device=x0.device)
        ids = torch.arange(n, device=x0.device)  # the images still attacked: the rows of every state tensor

        def record(z: torch.Tensor, acc: torch.Tensor) -> None:
            better = acc <= out_acc[ids]
            out[ids[better]], out_acc[ids[better]] = z[better], acc[better]

        tracked, grad, acc = self._evaluate(x, target, offset)
        record(x, acc)
        s = {
            "x0": x0,
            "target": target,
            "x": x,
            "x_prev": x,
            "grad": grad,
            "loss": tracked,
            "x_max": x.clone(),
            "grad_max": grad.clone(),
            "loss_max": tracked.clone(),
            "step": torch.full((n, 1, 1, 1), 2 * radius, device=x0.device, dtype=x0.dtype),
            "increases": torch.zeros(n, device=x0.device),
            "loss_at_mark": tracked.clone(),
            "reduced": torch.ones(n, dtype=torch.bool, device=x0.device),
        }  # no condition 2 at the first mark
        marks, last_mark = set(checkpoints(iterations)), 0
        for k in range(iterations):
            keep = out_acc[ids] > 0
            if not keep.all():  # fully misclassified images leave the stage
                ids, s = ids[keep], {key: value[keep] for key, value in s.items()}
                if not len(ids):
                    break
            x, step = s["x"], s["step"]
            z = linf_ball(x + step * s["grad"].sign(), s["x0"], radius)
            coeff = self.momentum if k > 0 else 1.0
            x_new = linf_ball(x + coeff * (z - x) + (1 - coeff) * (x - s["x_prev"]), s["x0"], radius)
            need_grad = k + 1 < iterations  # the last iterate's gradient is never used
            tracked, grad, acc = self._evaluate(x_new, s["target"], offset + k + 1, need_grad)
            record(x_new, acc)
            s["increases"] += (tracked > s["loss"]).float()
            improved = tracked > s["loss_max"]
            s["x_max"][improved], s["loss_max"][improved] = x_new[improved], tracked[improved]
            if need_grad:
                s["grad_max"][improved] = grad[improved]
            s["x_prev"], s["x"], s["loss"], s["grad"] = x, x_new, tracked, grad
            if k + 1 in marks:
                self._check(s, k + 1 - last_mark, ids, n)
                last_mark = k + 1
        return out, out_acc

    def _check(self, s: dict, span: int, ids: torch.Tensor, n: int) -> None:
        """A checkpoint: halve the step of the images whose tracked loss oscillated or stalled, and move
        them back to their highest-loss iterate (their previous iterate stays, so momentum carries on)."""
        halve = (s["increases"] <= self.rho * span) | (~s["reduced"] & (s["loss_at_mark"] >= s["loss_max"]))
        view = halve.view(-1, 1, 1, 1)
        s["step"] = torch.where(view, s["step"] / 2, s["step"])
        s["x"] = torch.where(view, s["x_max"], s["x"])
        if s["grad"] is not None:
            s["grad"] = torch.where(view, s["grad_max"], s["grad"])
        s["increases"] = torch.zeros_like(s["increases"])
        s["reduced"], s["loss_at_mark"] = halve, s["loss_max"].clone()
        steps = s["step"].new_full((n,), float("nan"))
        steps[ids] = s["step"].view(-1)
        self.schedule.append(steps)
