"""The score of METHOD.md "Evaluation", shared by the trained models (`evaluate`) and the
baselines (`baselines`) so that both are measured by one implementation."""

from __future__ import annotations

import numpy as np


def relative_rollout_error(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per trajectory: sum_t |pred(t) - truth(t)| / sum_t |truth(t)| over [trajectory, time, m].

    A rollout that left the finite numbers scores infinity.
    """
    error = np.linalg.norm(predicted - truth, axis=-1).sum(-1) / np.linalg.norm(truth, axis=-1).sum(-1)
    return np.where(np.isfinite(error), error, np.inf)
