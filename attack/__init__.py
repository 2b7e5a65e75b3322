"""Adversarial attacks on segmentation models (one base class, one small class per attack).

Every module is imported here, so that each attack registers itself in :data:`attack.base.ATTACKS`: a new
attack is one new file.
"""

from attack.apgd import APGD
from attack.base import ATTACKS, Attack, MinNormAttack
from attack.bim import BIM
from attack.cw import CW
from attack.dag import DAG
from attack.deepfool import DeepFool
from attack.fgsm import FGSM
from attack.padam import PAdam
from attack.pgd import PGD, CosPGD, SegPGD
from attack.sea import SEA
from util.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = [
    "APGD",
    "ATTACKS",
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
