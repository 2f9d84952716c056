"""The follower gap's line in ``report.md`` (``gap_summary``): each split's follower, PGD-10 and
FGSM-RS losses and accuracies and the ratios, labelled by split, the carried follower's where it
was measured, and the φ updates where counted (none is a count too); no line without a gap."""

from __future__ import annotations

from problems.adversarial.gap import gap_summary

SPLITS = {
    "probe": dict(
        follower=(1.234, 0.5), pgd10=(2.0, 0.25), fgsm_rs=(1.5, 0.375), ratios=(0.6, 0.4)
    ),
    "val": dict(follower=(0.9, 0.7), pgd10=(1.1, 0.6), fgsm_rs=(1.0, 0.65), ratios=(0.75, 0.5)),
}


def _row(**extra: float) -> dict[str, float]:
    row: dict[str, float] = {"epoch": 3}
    for split, values in SPLITS.items():
        for name in ("follower", "pgd10", "fgsm_rs"):
            row[f"gap_{split}_{name}_loss"], row[f"gap_{split}_{name}_acc"] = values[name]
        row[f"gap_{split}_follower_ratio"], row[f"gap_{split}_fgsm_rs_ratio"] = values["ratios"]
    return row | extra


PROBE = (
    "on the training probe set the follower reaches loss 1.234 (accuracy 0.500) against PGD-10's "
    "2.000 (0.250) and FGSM-RS's 1.500 (0.375): ratio 0.60 (FGSM-RS 0.40)"
)
VAL = (
    "on the validation set the follower reaches loss 0.900 (accuracy 0.700) against PGD-10's "
    "1.100 (0.600) and FGSM-RS's 1.000 (0.650): ratio 0.75 (FGSM-RS 0.50)"
)


def test_the_line_gives_each_splits_losses_accuracies_and_ratios() -> None:
    assert gap_summary(_row(phi_updates=12)) == (
        f"Follower gap at epoch 3 after 12 φ updates: {PROBE}; {VAL}."
    )


def test_the_carried_follower_and_zero_phi_updates_are_said() -> None:
    row = _row(phi_updates=0, gap_probe_carried_loss=2.5, gap_probe_carried_ratio=1.25)
    carried = "from its carried δ the training follower reaches loss 2.500 on the probe: ratio 1.25"
    assert gap_summary(row) == (
        f"Follower gap at epoch 3 after 0 φ updates: {PROBE}; {VAL}; {carried}."
    )


def test_without_a_phi_update_count_or_a_gap_the_line_says_less() -> None:
    assert gap_summary(_row()) == f"Follower gap at epoch 3: {PROBE}; {VAL}."
    assert gap_summary({"epoch": 3, "phi_updates": 5, "val_pgd10_acc": 0.5}) == ""
