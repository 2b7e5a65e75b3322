"""DDC-AT's (Xu et al., ICCV 2021) state dicts to and from a plain model's; the heads themselves are
``SegNet(heads="ddcat")`` (:mod:`model.base`, docs/checkpoints.md)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

# DDC-AT key prefix -> plain model key prefix (None: the head is dropped at inference).
PLAIN_PREFIX = {"cls1.": "cls.", "aux_cls1.": "aux.", "cls2.": None, "mask1.": None}


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
