"""Adversarial attacks on segmentation models (one base class, one small class per attack)."""

from attack.apgd import APGD
from attack.base import Attack, MinNormAttack
from attack.bim import BIM
from attack.cw import CW
from attack.dag import DAG
from attack.deepfool import DeepFool
from attack.fgsm import FGSM
from attack.padam import PAdam
from attack.pgd import PGD, CosPGD, SegPGD
from attack.sea import SEA

__all__ = [
    "APGD",
    "BIM",
    "CW",
    "DAG",
    "FGSM",
    "PGD",
    "SEA",
    "Attack",
    "CosPGD",
    "DeepFool",
    "MinNormAttack",
    "PAdam",
    "SegPGD",
]
