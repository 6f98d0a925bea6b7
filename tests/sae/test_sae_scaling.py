"""Scaling-law fits on planted answers: the joint L(n, k) form and the compute frontier."""

import numpy as np
import pytest

from sae.probe_tasks import inside_brackets_or_quotes, sentence_start, task_labels
from sae.scaling import JOINT_NAMES, fit_frontier, fit_joint, frontier_mask, joint_loss


def test_joint_fit_recovers_planted_coefficients():
    n = np.array([512, 1024, 2048, 4096, 8192] * 4, dtype=float)
    k = np.repeat([8, 16, 32, 64], 5).astype(float)
    truth = np.array([1.5, -0.6, -0.25, 0.03, -3.5, -0.3])
    fit = fit_joint(n, k, joint_loss(truth, n, k))
    assert [fit.coefficients[name] for name in JOINT_NAMES] == pytest.approx(truth.tolist(), abs=1e-3)
    assert fit.rmse_log < 1e-6 and fit.n_points == 20
    # with 1% noise the fitted surface stays within the noise of the truth
    noisy = joint_loss(truth, n, k) * np.exp(np.random.default_rng(0).normal(scale=0.01, size=len(n)))
    refit = fit_joint(n, k, noisy)
    params = np.array([refit.coefficients[name] for name in JOINT_NAMES])
    assert refit.rmse_log < 0.015
    assert np.abs(np.log(joint_loss(params, n, k) / joint_loss(truth, n, k))).max() < 0.02


def test_joint_fit_needs_six_points():
    with pytest.raises(ValueError, match=">= 6 points"):
        fit_joint(np.array([1, 2.0]), np.array([1, 2.0]), np.array([0.5, 0.4]))


def test_frontier_is_the_lower_envelope_and_its_power_law_is_recovered():
    compute = np.array([1.0, 2.0, 3.0, 4.0, 8.0, 16.0])
    loss = np.array([1.0, 2.0, 0.5, 0.6, 0.25, 0.125])
    assert frontier_mask(compute, loss).tolist() == [True, False, True, False, True, True]
    c = np.geomspace(1e9, 1e12, 6)
    fit = fit_frontier(c, 3.0 * c**-0.2)
    assert fit.coefficients["b"] == pytest.approx(-0.2) and np.exp(fit.coefficients["a"]) == pytest.approx(3.0)


def test_probe_task_labels_on_known_tokens():
    tokens = ["The", "cat", "(", "x", "##y", ")", ".", "Then", '"', "hi", '"', "42", "the", "a_b"]
    labels = task_labels([tokens])
    assert labels["capitalised"].nonzero()[0].tolist() == [0, 7]
    assert labels["digit"].nonzero()[0].tolist() == [11]
    assert labels["punctuation"].nonzero()[0].tolist() == [2, 5, 6, 8, 10]
    assert labels["word_continuation"].nonzero()[0].tolist() == [4]
    assert labels["stopword"].nonzero()[0].tolist() == [0, 12]
    assert inside_brackets_or_quotes(tokens).nonzero()[0].tolist() == [3, 4, 9]
    assert sentence_start(tokens).nonzero()[0].tolist() == [0, 7]
    assert labels["code_like"][[2, 13]].all() and not labels["code_like"][1]
