"""Probes on frozen features: few-shot and full linear probes (logistic regression) and a count regressor.

Linear probe, after CLIP_benchmark: the inverse regularisation strength C (= 1 / weight decay) is chosen
on the validation split from a log-spaced grid, then the probe is refit on train + val with that C and
scored once on test. Few-shot: k examples per class drawn with a seeded generator, a probe with a fixed C,
repeated over seeds, mean and standard deviation reported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from sarclip_train.eval.counting import counting_metrics
from sarclip_train.eval.zeroshot import classification_metrics

log = logging.getLogger(__name__)

FEWSHOT_KS = (1, 2, 4, 8, 16)
FEWSHOT_SEEDS = (0, 1, 2)
C_GRID = tuple(float(c) for c in np.logspace(-3, 3, 7))
MAX_ITER = 1000


def fewshot_indices(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Up to k indices per class, drawn without replacement by ``np.random.default_rng(seed)``.

    Classes are visited in sorted order and the result is sorted, so the draw depends only on
    (labels, k, seed). A class with fewer than k examples contributes all of them.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picked.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def fit_logreg(x: np.ndarray, y: np.ndarray, c: float, seed: int = 0):
    """A multinomial L2 logistic regression (lbfgs) on standardised features, classes weighted inversely to
    their frequency; deterministic for fixed inputs.

    Why standardised: on raw L2-normalised embeddings lbfgs at large C ran into its iteration cap (6 minutes
    for one linear probe over 10k chips); scaled features converge in a few dozen iterations. Why balanced:
    the headline is mean per-class recall, and an unweighted probe on data that is 60% ships buys top-1 by
    never naming a rare class. Why one BLAS thread: these products are small (14k x 64 on the demo's chips),
    and a multi-threaded BLAS beside the other busy core made each fit 14x slower (45 s against 3.3 s for
    1000 lbfgs iterations, measured on the demo's features); at the largest C the fit stops at ``MAX_ITER``
    (a ConvergenceWarning, silenced: the iteration count is reported with the probe's metrics)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed,
                                                             class_weight="balanced"))
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(x, y)


def iterations(clf) -> int:
    """lbfgs iterations the fitted probe took (``MAX_ITER`` when it stopped at the cap)."""
    return int(np.max(clf[-1].n_iter_))


def _scores(clf, x: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, num_classes) decision scores; classes never seen in training score -inf."""
    out = np.full((len(x), num_classes), -np.inf)
    dec = clf.decision_function(x)
    if dec.ndim == 1:  # binary: sklearn returns the score of classes_[1]
        dec = np.stack([-dec, dec], axis=1)
    out[:, clf.classes_] = dec
    return out


def probe_metrics(clf, x: np.ndarray, y: np.ndarray, classnames: Sequence[str]) -> dict:
    return classification_metrics(_scores(clf, x, len(classnames)), y, classnames)


def select_c(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
             grid: Sequence[float] = C_GRID, seed: int = 0) -> tuple[float, dict[float, float]]:
    """The C with the best validation top-1 (the smallest such C on ties: the most regularised)."""
    accs: dict[float, float] = {}
    for c in grid:
        clf = fit_logreg(train[0], train[1], c, seed)
        accs[float(c)] = float(np.mean(clf.predict(val[0]) == val[1]))
    best = max(accs.values())
    return min(c for c, a in accs.items() if a == best), accs


def linear_probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None,
                 test: tuple[np.ndarray, np.ndarray], classnames: Sequence[str],
                 grid: Sequence[float] = C_GRID, seed: int = 0) -> dict:
    """Full linear probe: C chosen on val, refit on train + val, top-1 / top-5 / mean per-class recall."""
    if val is not None and len(val[1]):
        c, accs = select_c(train, val, grid, seed)
        x = np.concatenate([train[0], val[0]])
        y = np.concatenate([train[1], val[1]])
    else:
        log.warning("linear probe: no validation split; using C=1.0")
        c, accs, (x, y) = 1.0, {}, train
    clf = fit_logreg(x, y, c, seed)
    m = probe_metrics(clf, test[0], test[1], classnames)
    m = {f"lp_{k}" if k in ("acc1", "acc5", "mean_per_class_recall") else k: v for k, v in m.items()}
    m.update(C=c, val_acc1_by_C={str(k): v for k, v in accs.items()}, seed=seed, iterations=iterations(clf),
             max_iter=MAX_ITER)
    return m


def fewshot_probe(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                  classnames: Sequence[str], ks: Sequence[int] = FEWSHOT_KS,
                  seeds: Sequence[int] = FEWSHOT_SEEDS, c: float = 1.0) -> dict:
    """For each k: per-seed top-1 / mean per-class recall and their mean and (population) std."""
    out: dict[str, dict] = {}
    for k in ks:
        runs = []
        for s in seeds:
            idx = fewshot_indices(train[1], k, s)
            if len(np.unique(train[1][idx])) < 2:
                log.warning("few-shot k=%d seed=%d: fewer than two classes; skipped", k, s)
                continue
            m = probe_metrics(fit_logreg(train[0][idx], train[1][idx], c, s), test[0], test[1], classnames)
            runs.append((m["acc1"], m["mean_per_class_recall"]))
        if not runs:
            continue
        a = np.asarray(runs)
        out[f"k={k}"] = {
            "acc1_mean": float(a[:, 0].mean()), "acc1_std": float(a[:, 0].std()),
            "mean_per_class_recall_mean": float(a[:, 1].mean()),
            "mean_per_class_recall_std": float(a[:, 1].std()),
            "acc1_per_seed": a[:, 0].tolist(), "seeds": list(seeds), "C": c,
        }
    return out


def count_regression_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                           test_y: np.ndarray, alphas: Sequence[float] = C_GRID) -> dict:
    """Ridge regression of the count on frozen features (alpha by leave-one-out CV on the train set).

    MAE and RMSE use the raw predictions; top-1 and within-one use them rounded and clipped to 1..10.
    """
    from sklearn.linear_model import RidgeCV

    reg = RidgeCV(alphas=list(alphas)).fit(train_x, np.asarray(train_y, np.float64))
    pred = reg.predict(test_x)
    m = counting_metrics(test_y, pred)
    m.update(alpha=float(reg.alpha_), predictions=[float(p) for p in pred])
    return m
