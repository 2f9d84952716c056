"""Adversarial robustness as bilevel problems: DRO (paper Eq. 2-3) and AIT (Eq. 5-6).

What a new adversarial problem needs, without reaching into the modules: the problem base for an
input perturbation δ in an ε-ball (``Perturbation``), the two problems, the data sets (inputs in
[0, 1]) and models (normalisation inside), the run configurations, and the evaluation attacks.
"""

from problems.adversarial.ait import AdversarialInterpolation
from problems.adversarial.ait_config import AITConfig
from problems.adversarial.data import (
    DatasetInfo,
    Splits,
    dataset_info,
    iterate_batches,
    load_dataset,
)
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.evaluation.attacks import (
    Attack,
    fgsm_attack,
    pgd_attack,
    robust_accuracy,
    run_attack,
)
from problems.adversarial.models import MODEL_NAMES, build_model
from problems.adversarial.perturbation import Perturbation
