"""The colour-histogram logistic-regression baseline on the pipeline's own splits.

Trains on data/split's train images, reports val_test MCC and accuracy at 0.5 beside the
phase-1 model's (metrics/phase1.json), so the model can be judged against colour alone.

    python benchmarks/colour_baseline.py      # after `dvc repro threshold`
"""

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import matthews_corrcoef

from roadwork.data.decode import load_rgb
from roadwork.data.examples import load_split
from roadwork.evaluate.baseline import colour_histogram_features, fit_colour_baseline

RAW, SPLITS = Path("data/raw"), Path("data/split/splits.csv")


def features(split: str):
    examples = load_split(RAW, SPLITS, split)
    return colour_histogram_features(load_rgb(e.path) for e in examples), np.array([e.label for e in examples])


def main() -> None:
    x_train, y_train = features("train")
    x_test, y_test = features("val_test")
    model = fit_colour_baseline(x_train, y_train, seed=0)
    predictions = model.predict(x_test)
    print(
        f"colour-histogram baseline, val_test (n={len(y_test)}): "
        f"MCC {matthews_corrcoef(y_test, predictions):.3f}  accuracy {(predictions == y_test).mean():.3f}"
    )
    phase1 = Path("metrics/phase1.json")
    if phase1.exists():
        test = json.loads(phase1.read_text())["val_test"]
        print(
            f"phase-1 model at 0.5,        val_test (n={test['n']}): MCC {test['mcc']:.3f}  accuracy {test['accuracy']:.3f}"
        )


if __name__ == "__main__":
    main()
