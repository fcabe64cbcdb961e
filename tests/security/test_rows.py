"""Rows mode: the suite's code is given no labels, however it looks for them, and whatever rows it
writes, the metrics the service computes from them stay inside their ranges."""

from tests.security.battery import MARKER, WALK, attack, failed_as, released

HUNT = (
    WALK
    + """
import numpy as np, evalgate, zipfile
print("{marker}")
x = evalgate.load_features()
found = None
try:
    found = evalgate.load_dataset()[1]
except RuntimeError:
    pass
for path, st in every_file():
    if found is not None:
        break
    try:
        if zipfile.is_zipfile(path):
            with np.load(path, allow_pickle=False) as npz:
                if "y" in npz.files and len(npz["y"]) == len(x):
                    found = npz["y"]
    except Exception:
        pass
k = 3
# Labels found: write them back as certain probabilities (accuracy 1). None: always class 0.
guess = found.astype(int) if found is not None else np.zeros(len(x), dtype=int)
evalgate.report_rows(probabilities=np.eye(k)[guess])
"""
)


def test_a_rows_suite_finds_no_labels_anywhere(stack):
    job = attack(stack, HUNT.replace("{marker}", MARKER), ["accuracy"], rows=True)
    m = released(job)
    # Always guessing one class of three balanced classes is right about a third of the time; a
    # suite that had found the labels would score 1.0.
    assert m["accuracy"] < 0.5, m


def test_hostile_rows_are_projected_and_the_metrics_stay_in_range(stack):
    job = attack(
        stack,
        f"""
import numpy as np, evalgate
print("{MARKER}")
x = evalgate.load_features()
rows = np.full((len(x), 3), -1e30)
rows[:, 1] = 1e30
rows[::2] = [[5.0, -7.0, 3.0]]
evalgate.report_rows(probabilities=rows)
""",
        ["accuracy", "log_loss", "brier", "ece", "macro_f1"],
        rows=True,
    )
    m = released(job)
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["ece"] <= 1 and 0 <= m["brier"] <= 2
    assert 0 <= m["log_loss"] <= 16 and 0 <= m["macro_f1"] <= 1


def test_rows_that_break_the_format_are_rejected(stack):
    job = attack(
        stack,
        f"""
import numpy as np, evalgate
print("{MARKER}")
x = evalgate.load_features()
evalgate.report_rows(probabilities=np.full((len(x) - 1, 3), 0.3))  # one row short
""",
        ["accuracy"],
        rows=True,
    )
    failed_as(job, "output_rejected")
