"""Adversarial attacks on segmentation models (one base class, one small class per attack)."""
from attack.apgd import APGD
from attack.base import Attack
from attack.bim import BIM
from attack.fgsm import FGSM
from attack.pgd import PGD, CosPGD, SegPGD
from attack.sea import SEA

__all__ = ["APGD", "BIM", "FGSM", "PGD", "SEA", "Attack", "CosPGD", "SegPGD"]
