"""`evalgate dev init NAME`: a suite that passes `evalgate dev run` as it is written.

It is a rows-mode suite, like the built-in classification suite: its code predicts every row and
writes the model's output as rows; the service computes the metrics from them and the labels, which
the code never sees. So it needs no operator's approval, and any metric of the catalogue can be asked."""

from __future__ import annotations

import re
from pathlib import Path

from service.registry.manifest import NAME_RE

SUITE_YAML = """\
name: {name}
version: 0.1.0
entrypoint: main.py
description: >
  {name}: writes the model's output for every dataset row; the service computes the metrics.
mode: rows
rows:
  kind: classification
"""

MAIN_PY = '''\
"""{name}: runs inside the job sandbox. Predicts every dataset row and writes the model's output as
rows; the service computes the metrics from them and the labels (this code never sees the labels)."""

import numpy as np

import evalgate

BATCH = 256


def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main() -> None:
    x = evalgate.load_features()  # the dataset's features, read-only; the sidecar has them too
    output, role = evalgate.model_output()  # which model output to read, and what it gives
    print(f"{{len(x)}} rows; reading output {{output!r}} ({{role}})")  # shown by `evalgate dev run` only
    out = evalgate.predict(x, batch_size=BATCH, output=output)
    if role == "labels":
        evalgate.report_rows(label=np.asarray(out).reshape(len(x)))
    elif role == "logits":
        evalgate.report_rows(probabilities=softmax(out))
    else:
        evalgate.report_rows(probabilities=out)


if __name__ == "__main__":
    main()
'''

README_MD = """\
# {name}

An evalgate suite. `main.py` runs inside the job sandbox, beside the model (reached only through
`evalgate.predict`), with the dataset's features (`evalgate.load_features()`).

## Develop against the twin

    evalgate dev run {name} --model MODEL@VERSION --dataset DATASET@VERSION --metrics accuracy,macro_f1

downloads the dataset's synthetic twin and the model's stand-in (the key is read from
`EVALGATE_API_KEY` or `--key-file`), runs this suite in the job image beside a local sidecar, and
shows everything a real job hides: its stdout and stderr, a traceback, the sidecar's usage. Then it
passes the result through the release gate and says whether it would be released, with the bits and
ε the real job would cost, or why it would be rejected. Nothing private is involved, so it costs
nothing. Offline: `--twin-dataset twin.npz --stand-in stand-in.onnx`.

## Submit

    evalgate suites upload {name}
    evalgate submit job.yaml     # suite: YOUR-NAME/{name}@0.1.0, model, dataset, metrics

## Modes

- **rows** (this skeleton): write one row per dataset row with `evalgate.report_rows(probabilities=...)`
  (or `label=` / `value=`); the service computes any metric of its catalogue (accuracy, macro_f1,
  log_loss, ece, per-class precision and recall, ...) with noise, from the labels your code never sees.
- **metrics**: declare your own metrics in suite.yaml (`mode: metrics`, `metrics: {{name: {{kind:
  proportion}}}}`), read the labels with `x, y = evalgate.load_dataset()` and report them with
  `evalgate.report({{...}})`. Such a suite needs an operator's approval, and every value is charged.
"""


def write_skeleton(name: str, parent: Path) -> Path:
    """Write NAME/ with suite.yaml, main.py and README.md under parent; refuses an existing directory."""
    if not re.match(NAME_RE, name):
        raise ValueError(f"suite name {name!r}: 1-64 of a-z 0-9 _ . - starting with a letter or digit")
    root = parent / name
    if root.exists():
        raise FileExistsError(f"{root} exists already")
    root.mkdir(parents=True)
    for filename, template in (("suite.yaml", SUITE_YAML), ("main.py", MAIN_PY), ("README.md", README_MD)):
        (root / filename).write_text(template.format(name=name))
    return root
