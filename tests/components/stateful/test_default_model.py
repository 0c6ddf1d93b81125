"""The default conv model's data-driven parts: the ridge head (leave-one-out
penalty, temperature), the head fitted by ``adapt`` on every batch, the
receptive field sized to the data, and ``default_epochs``."""

import numpy as np
import pytest

from components.stateful import conv_adapt
from components.stateful import default_model as dm
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful import ridge
from components.stateful import state

B, T, F = 4, 8, 2


def test_leave_one_out_residuals_equal_refitting_without_the_row():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(12, 5))
  y = np.stack([x @ rng.normal(size=5) + rng.normal(size=12) * 0.3,
                rng.normal(size=12)], axis=1)
  alpha = 0.7
  fit = ridge.fit(x, y, alphas=[alpha])
  for i in range(12):
    keep = np.arange(12) != i
    xk, yk = x[keep], y[keep]
    xm, ym = xk.mean(0), yk.mean(0)
    w = np.linalg.solve((xk - xm).T @ (xk - xm) + alpha * np.eye(5),
                        (xk - xm).T @ (yk - ym))
    np.testing.assert_allclose(fit.loo_predictions[i], (x[i] - xm) @ w + ym,
                               atol=1e-9)
  # The full fit solves the penalised normal equations.
  xm, ym = x.mean(0), y.mean(0)
  w = np.linalg.solve((x - xm).T @ (x - xm) + alpha * np.eye(5),
                      (x - xm).T @ (y - ym))
  np.testing.assert_allclose(fit.weights, w, atol=1e-9)
  np.testing.assert_allclose(fit.predict(x), (x - xm) @ w + ym, atol=1e-9)


def test_penalty_is_the_one_with_the_smallest_leave_one_out_error():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(30, 60))  # More features than rows: noise to fit.
  y = rng.normal(size=(30, 1))
  fit = ridge.fit(x, y)
  errors = {a: ridge.fit(x, y, alphas=[a]).loo_error for a in ridge.ALPHAS}
  assert fit.alpha == min(errors, key=errors.get)


def test_temperature_undoes_a_scaling_of_the_scores():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 3, size=200)
  scores = rng.normal(size=(200, 3))
  scores[np.arange(200), labels] += 1.0
  t = ridge.temperature(scores, labels)
  t_scaled = ridge.temperature(scores * 10.0, labels)
  assert t / t_scaled == pytest.approx(10.0, rel=0.3)


def _spec(**changes):
  base = dict(batch_size=B, num_unroll=T, stateful=True,
              feature_names=('a', 'b'), task='classification', num_classes=2,
              hyperparameters={'kernels': 16, 'lags': 2}, seed=3)
  base.update(changes)
  return ms.ModelSpec(**base)


def _cue_batches(n_batches, rng):
  """Sequences of 2 segments per lane: the label is the sign of the first
  steps of feature 0 (as in the bundled sample), noise elsewhere."""
  out = []
  for _ in range(n_batches // 2):
    labels = rng.integers(0, 2, size=B)
    x = rng.normal(size=(B, 2 * T, F)).astype(np.float32)
    x[:, :3, 0] = np.where(labels == 1, 1.0, -1.0)[:, None]
    for seg in range(2):
      weight = np.zeros((B, T), np.float32)
      if seg == 1:
        weight[:, -1] = 1.0
      out.append({'features': x[:, seg * T:(seg + 1) * T],
                  'reset': np.full(B, 1 - seg, np.int64),
                  'mask': np.ones((B, T), np.float32), 'label_weight': weight,
                  'labels': np.repeat(labels[:, None], T, axis=1)})
  return out


def test_adapt_fits_a_ridge_head_on_every_batch(monkeypatch):
  monkeypatch.setattr(conv_adapt, 'ADAPT_MAX_BATCHES', 4)  # Statistics: 2 seqs/lane.
  rng = np.random.default_rng(4)
  train, test = _cue_batches(40, rng), _cue_batches(20, rng)
  spec = _spec(typical_length=2 * T)
  module = model_io.resolve_module()
  model = model_io.build_stateful(module, spec)
  summary = module.adapt(model, spec, train)  # A list: read twice.
  assert summary['labelled_steps'] == 20 * B == summary['head_rows']
  assert summary['ridge_alpha'] in ridge.ALPHAS
  correct = total = 0
  for i in range(0, len(test), 2):
    state.zero_all(model)
    model(test[i]['features'])
    logits = model(test[i + 1]['features']).numpy()[:, -1]
    correct += int((logits.argmax(-1) == test[i + 1]['labels'][:, -1]).sum())
    total += B
  assert correct / total >= 0.95
  assert module.default_epochs(spec) == 0


def test_head_rows_are_thinned_to_a_uniform_sample(monkeypatch):
  monkeypatch.setattr(conv_adapt, 'HEAD_MAX_ROWS', 6)
  rng = np.random.default_rng(5)
  batches = _cue_batches(40, rng)
  spec = _spec()
  model = model_io.build_stateful(model_io.resolve_module(), spec)
  x, y, groups, seen = conv_adapt._head_rows(model, batches,
                                     np.random.default_rng(0))
  assert seen == 20 * B
  assert 1 <= x.shape[0] <= 2 * 6 + B and x.shape[0] == y.shape[0]


@pytest.mark.parametrize('length, hp, want', [
    (24, {}, ([1, 2], 224)),          # 23 // 8 = 2
    (132, {}, ([1, 2, 4, 8, 16], 90)),  # 131 // 8 = 16
    (1460, {}, ([1, 2, 4, 8, 16, 32, 64], 64)),  # capped at 64
    (5, {}, ([1], 448)),
    (None, {}, ([1, 2, 4, 8, 16, 32, 64], 64)),
    (24, {'max_dilation': 8}, ([1, 2, 4, 8], 112)),
    (24, {'kernels_per_dilation': 3}, ([1, 2], 3)),
    (100, {'kernel_size': 3, 'kernels': 10}, ([1, 2, 4, 8, 16, 32], 2)),
])
def test_receptive_field_from_the_median_length(length, hp, want):
  spec = _spec(typical_length=length, hyperparameters=hp)
  assert dm.kernel_layout(spec) == want


def test_default_epochs_per_model():
  assert dm.default_epochs(_spec()) == 0
  assert dm.default_epochs(_spec(hyperparameters={'head': 'sgd'})) is None
  assert dm.default_epochs(_spec(hyperparameters={'model': 'lstm'})) is None
  with pytest.raises(ValueError, match='head'):
    dm.head_kind(_spec(hyperparameters={'head': 'svm'}))


def test_grouped_penalty_choice_holds_whole_groups_out():
  rng = np.random.default_rng(6)
  x = rng.normal(size=(20, 4))
  y = (x @ rng.normal(size=4))[:, None] + rng.normal(size=(20, 1)) * 0.1
  groups = np.repeat([0, 1], 10)
  fit = ridge.fit(x, y, alphas=[0.5], groups=groups, folds=2)
  for held, rest in ((0, 1), (1, 0)):
    other = ridge.fit(x[groups == rest], y[groups == rest], alphas=[0.5])
    np.testing.assert_allclose(fit.loo_predictions[groups == held],
                               other.predict(x[groups == held]), atol=1e-9)


def test_head_rows_carry_their_sequence():
  rng = np.random.default_rng(7)
  batches = _cue_batches(8, rng)  # 4 sequences per lane, labelled once.
  model = model_io.build_stateful(model_io.resolve_module(), _spec())
  _, _, groups, seen = conv_adapt._head_rows(model, batches,
                                             np.random.default_rng(0))
  assert seen == 4 * B and np.unique(groups).size == 4 * B
