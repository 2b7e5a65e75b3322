"""Adversarial attacks on segmentation models (one base class, one small class per attack)."""
from attack.base import Attack
from attack.bim import BIM

__all__ = ["BIM", "Attack"]
