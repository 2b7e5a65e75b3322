"""DDC-AT heads (Xu et al., "Dynamic Divide-and-Conquer Adversarial Training for Robust Semantic
Segmentation", ICCV 2021) for any :class:`model.base.SegNet`.

The DDC-AT model replaces ``cls`` by ``cls1`` (the head kept at inference), adds ``cls2`` (the head for
pixels the router sends to the "adversarial" branch) and ``mask1`` (the 2-way router), all with the
layout of ``cls`` on the same features, and renames ``aux`` to ``aux_cls1``: the key names of the
original release. In eval mode only ``cls1`` runs, so the deployed network is the undefended one;
:func:`to_plain_state_dict` writes it as a plain checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

# DDC-AT key prefix -> plain model key prefix (None: the head is dropped at inference).
PLAIN_PREFIX = {"cls1.": "cls.", "aux_cls1.": "aux.", "cls2.": None, "mask1.": None}


class DDCATMixin:
    """Turns a SegNet subclass into its DDC-AT variant (use through :func:`ddcat_class`).

    Training returns ``{'out': routed logits, 'mask': router logits, 'aux': aux_cls1 logits}``; the
    routed output takes, per pixel, ``cls2``'s logits where the router's argmax is 1 and ``cls1``'s
    where it is 0. Eval returns ``cls1``'s logits.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cls1 = self._modules.pop("cls")
        self.cls2 = self.make_head(self.classes)
        self.mask1 = self.make_head(2)
        aux = self._modules.pop("aux", None)
        self.aux = None
        if aux is not None:
            self.aux_cls1 = aux

    def head_modules(self) -> list[nn.Module]:
        """Context module and all four heads at 10x, like the original's parameter groups."""
        heads = [self.context, self.cls1, self.cls2, self.mask1]
        return heads + ([self.aux_cls1] if hasattr(self, "aux_cls1") else [])

    def route(
        self, feat: torch.Tensor, input_size: tuple[int, int], cls1: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(routed logits, router logits) at the output size, from context features (and ``cls1``'s
        upsampled logits when already computed)."""
        if cls1 is None:
            cls1 = self.upsample(self.cls1(feat), input_size)
        cls2 = self.upsample(self.cls2(feat), input_size)
        mask = self.upsample(self.mask1(feat), input_size)
        to_cls2 = mask.argmax(1, keepdim=True).bool()
        return torch.where(to_cls2, cls2, cls1), mask

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        input_size = (x.shape[-2], x.shape[-1])
        x_aux, feat = self.features(x)
        if not self.training:
            return self.upsample(self.cls1(feat), input_size)
        routed, mask = self.route(feat, input_size)
        result = {"out": routed, "mask": mask}
        if hasattr(self, "aux_cls1"):
            result["aux"] = self.upsample(self.aux_cls1(x_aux), input_size)
        return result


_CLASSES: dict[type, type] = {}


def ddcat_class(base: type) -> type:
    """The DDC-AT variant of a SegNet class (``PSPNet`` -> ``PSPNetDDCAT``), built once."""
    if base not in _CLASSES:
        _CLASSES[base] = type(
            f"{base.__name__}DDCAT",
            (DDCATMixin, base),
            {"__doc__": f"{base.__name__} with the DDC-AT heads (see model.ddcat)."},
        )
    return _CLASSES[base]


def is_ddcat_state(state: Mapping[str, torch.Tensor]) -> bool:
    return any(key.startswith("cls1.") for key in state)


def to_plain_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A DDC-AT state dict as the plain model's: ``cls1`` -> ``cls``, ``aux_cls1`` -> ``aux``,
    ``cls2`` and ``mask1`` dropped."""
    plain = {}
    for key, value in state.items():
        for prefix, new in PLAIN_PREFIX.items():
            if key.startswith(prefix):
                if new is not None:
                    plain[new + key[len(prefix) :]] = value
                break
        else:
            plain[key] = value
    return plain


def from_plain_state_dict(
    state: Mapping[str, torch.Tensor], ddcat_state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Start a DDC-AT model from a plain (e.g. undefended) checkpoint: ``cls`` initialises both ``cls1``
    and ``cls2``, ``aux`` becomes ``aux_cls1``, and ``mask1`` keeps its values in ``ddcat_state`` (the
    model's own initialisation)."""
    out = {}
    for key, value in state.items():
        if key.startswith("cls."):
            out["cls1." + key[4:]] = value
            out["cls2." + key[4:]] = value.clone()
        elif key.startswith("aux."):
            out["aux_cls1." + key[4:]] = value
        else:
            out[key] = value
    out.update({k: v for k, v in ddcat_state.items() if k.startswith("mask1.")})
    return out
