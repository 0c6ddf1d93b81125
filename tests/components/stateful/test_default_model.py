"""The default conv model's data-driven parts: the ridge head (leave-one-out
penalty, temperature), the head fitted by ``adapt`` on every batch, the
receptive field sized to the data, and ``default_epochs``."""

import numpy as np
import pytest

from components.stateful.models import adapt_passes
from components.stateful.models import conv_adapt
from components.stateful.models import head_rows
from components.stateful.models import ppv_thresholds
from components.stateful.models import default_model as dm
from components.stateful import model_io
from components.stateful import model_spec as ms
from components.stateful.models import ridge
from components.stateful.models import row_sampling
from components.stateful.distribution import shards
from components.stateful.state import protocol as state

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
  assert module.default_epochs(spec) == dm.FINE_TUNE_EPOCHS


def _head_rows(model, batches, seed=0):
  """The head's rows of ``batches`` as ``adapt``'s features pass gathers
  them (``head_rows.HeadRows``, one process)."""
  features = model.get_layer('features_all').output
  rows = head_rows.HeadRows(seed, shards.Shard(), int(features.shape[-1]))
  run = adapt_passes.runner(model, [ppv_thresholds.kernel_outputs(model)[0],
                                    features])
  for i, (batch, (_, out)) in enumerate(adapt_passes.stream(model, run,
                                                            batches)):
    rows.add(i, batch, out.numpy())
  return rows.sample()


class _Counted:
  """Batches that count their passes (``iter``) and the batches read."""

  def __init__(self, batches):
    self.batches, self.passes, self.read = batches, 0, 0

  def __iter__(self):
    self.passes += 1
    for batch in self.batches:
      self.read += 1
      yield batch


@pytest.mark.parametrize('n_batches', [8, 12])
def test_adapt_runs_the_model_in_two_passes(monkeypatch, n_batches):
  """One pass for the PPV thresholds and one for everything that reads
  the features (the standardisation and the head's rows, of both fits
  with the validation carve), by one traced function: the model runs
  twice per batch of the sample, and once per batch past it (``12``:
  more than ``ADAPT_MAX_BATCHES``); the batches are read once."""
  monkeypatch.setattr(conv_adapt, 'ADAPT_MAX_BATCHES', 8)
  traced, calls = [], []
  real_runner = adapt_passes.runner

  def counting_runner(model, outputs):
    run = real_runner(model, outputs)
    traced.append(run)

    def counted(features, reset):
      calls.append(1)
      return run(features, reset)

    return counted

  monkeypatch.setattr(adapt_passes, 'runner', counting_runner)
  _, marked = _carve_of(_cue_batches(n_batches, np.random.default_rng(9)),
                        [1])
  source = _Counted(marked)
  spec = _spec(typical_length=2 * T)
  module = model_io.resolve_module()
  model = model_io.build_stateful(module, spec)
  refit = _Refit()
  summary = module.adapt(model, spec, source, refit=refit)
  assert refit.weights is not None
  assert summary['labelled_steps'] == n_batches // 2 * (B - 1)
  assert len(traced) == 1
  sample = min(n_batches, 8)
  assert len(calls) == sample + n_batches
  assert source.passes == 1 and source.read == n_batches


@pytest.mark.parametrize('label_kind, copies', [('per_sequence', 4),
                                                ('per_step', 1)])
def test_thresholds_are_each_ppv_columns_quantile(label_kind, copies):
  """The PPV pool reads copies of the kernels' outputs; one partition per
  kernel gives each copy's threshold the bits ``np.quantile`` gives its
  column alone."""
  spec = _spec(label_kind=label_kind, hyperparameters={
      'kernels': 16, 'thresholds_per_kernel': copies})
  model = model_io.build_stateful(model_io.resolve_module(), spec)
  kernels, found = ppv_thresholds.kernel_outputs(model)
  assert found == copies
  assert (int(kernels.shape[-1]) * copies ==
          int(model.get_layer('conv_pool').input.shape[-1]))
  rng = np.random.default_rng(11)
  outputs = rng.normal(size=(500, 6)).astype(np.float32)
  outputs[:, 1] = np.round(outputs[:, 1])  # Ties.
  pooled = np.concatenate([outputs] * copies, axis=1)
  qs = rng.uniform(*ppv_thresholds.PPV_QUANTILES, size=pooled.shape[1])
  qs[0] = 0.5
  want = [np.quantile(pooled[:, c], qs[c]) for c in range(pooled.shape[1])]
  np.testing.assert_array_equal(ppv_thresholds._thresholds(outputs, qs),
                                want)


def test_head_rows_are_thinned_to_a_uniform_sample(monkeypatch):
  monkeypatch.setattr(head_rows, 'HEAD_MAX_ROWS', 6)
  rng = np.random.default_rng(5)
  batches = _cue_batches(40, rng)
  spec = _spec()
  model = model_io.build_stateful(model_io.resolve_module(), spec)
  x, y, groups, seen = _head_rows(model, batches)
  assert seen == 20 * B
  assert x.shape[0] == y.shape[0] == groups.shape[0] == 6
  # The 6 labelled steps of smallest priority, in lane order.
  keys = np.concatenate([
      row_sampling.row_keys(i, *np.nonzero(b['label_weight'] > 0))
      for i, b in enumerate(batches)])
  want = np.sort(keys[np.argsort(row_sampling.row_priorities(0, keys))[:6]])
  lanes = (want >> 20) & ((1 << 20) - 1)
  np.testing.assert_array_equal(groups // (1 << 32), lanes)
  rows = {int(k): (b['labels'][l, t]) for i, b in enumerate(batches)
          for l, t in zip(*np.nonzero(b['label_weight'] > 0))
          for k in row_sampling.row_keys(i, np.array([l]), np.array([t]))}
  np.testing.assert_array_equal(y, [rows[int(k)] for k in want])


def test_row_priorities_are_uniform_and_fixed_by_the_seed():
  keys = row_sampling.row_keys(3, np.repeat(np.arange(64), 64),
                             np.tile(np.arange(64), 64))
  u = row_sampling.row_priorities(1, keys)
  assert u.min() >= 0.0 and u.max() < 1.0
  counts, _ = np.histogram(u, bins=8, range=(0, 1))
  assert counts.min() > 0.8 * keys.size / 8
  np.testing.assert_array_equal(u, row_sampling.row_priorities(1, keys))
  assert not np.array_equal(u, row_sampling.row_priorities(2, keys))


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
  assert dm.default_epochs(_spec()) == dm.FINE_TUNE_EPOCHS
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
  _, _, groups, seen = _head_rows(model, batches)
  assert seen == 4 * B and np.unique(groups).size == 4 * B


def test_gram_ridge_equals_a_direct_solve_on_the_same_rows():
  """Fitted from accumulated statistics (in two parts, merged) = the
  closed form on the rows themselves; each fold's held-out error = the
  error of the fit without that fold, computed on its rows."""
  rng = np.random.default_rng(8)
  x = rng.normal(size=(300, 5)) * [1, 2, 3, 4, 5] + 1.0
  y = x @ rng.normal(size=(5, 2)) + rng.normal(size=(300, 2)) + 3.0
  groups = np.repeat(np.arange(30), 10)
  one, two = ridge.GramRidge(5, 2), ridge.GramRidge(5, 2)
  one.add(x[:140], y[:140], groups[:140])
  two.add(x[140:], y[140:], groups[140:])
  one.merge(two)
  assert one.n.sum() == 300
  for alpha in (0.01, 10.0):
    w, b = one.solve(alpha)
    direct = ridge.fit(x, y, alphas=[alpha])
    np.testing.assert_allclose(w, direct.weights, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(b, direct.bias, rtol=1e-8, atol=1e-10)
  fold = one.fold_of(groups)
  assert len(set(fold.tolist())) == 5
  for f in range(5):
    w, b = one.solve(1.0, without=f)
    sel = fold == f
    direct = ridge.fit(x[~sel], y[~sel], alphas=[1.0])
    np.testing.assert_allclose(w, direct.weights, rtol=1e-8, atol=1e-10)
    sse = np.sum((y[sel] - direct.predict(x[sel])) ** 2)
    assert one.held_out_sse(f, w, b) == pytest.approx(sse, rel=1e-8)
  fit = one.fit()
  assert fit.alpha in ridge.GROUPED_ALPHAS and fit.loo_error > 0


def _ar_batches(coef, lanes, segments, seqs_per_lane, rng, noise=0.5):
  """B lanes of AR(len(coef)) streams, per-step labels = the next value,
  laid ``packed``: each lane holds ``seqs_per_lane`` sequences of
  ``segments`` segments of T steps."""
  p = len(coef)
  out = []
  for _ in range(seqs_per_lane):
    n = segments * T + 1
    z = np.zeros((lanes, n + 100))
    for t in range(p, n + 100):
      z[:, t] = (z[:, t - p:t][:, ::-1] @ coef + 2.0
                 + rng.normal(size=lanes) * noise)
    z = z[:, 100:]
    x, labels = z[:, :-1, None].astype(np.float32), z[:, 1:]
    for seg in range(segments):
      cut = slice(seg * T, (seg + 1) * T)
      out.append({'features': x[:, cut], 'reset': np.full(
          lanes, int(seg == 0), np.int64), 'mask': np.ones((lanes, T),
                                                          np.float32),
                  'label_weight': np.ones((lanes, T), np.float32),
                  'labels': labels[:, cut].astype(np.float32)})
  return out


def _ar_reference(batches, p, fit=None):
  """Least-squares AR(p) with intercept on the batches' streams (lags
  before a sequence's start read 0); returns (coef, mse)."""
  rows, ys = [], []
  lane_hist = None
  for batch in batches:
    x = batch['features'][..., 0]
    if batch['reset'][0]:
      lane_hist = np.zeros((x.shape[0], p))
    for t in range(x.shape[1]):
      lane_hist = np.concatenate([x[:, t:t + 1], lane_hist[:, :-1]], axis=1)
      rows.append(np.concatenate([lane_hist, np.ones((x.shape[0], 1))], 1))
      ys.append(batch['labels'][:, t])
  a, y = np.concatenate(rows), np.concatenate(ys)
  if fit is None:
    fit = np.linalg.lstsq(a, y, rcond=None)[0]
  return fit, float(np.mean((a @ fit - y) ** 2))


def test_per_step_head_matches_a_true_ar_fit_on_an_ar_stream():
  """Per-step forecasting of an AR(3) stream: the default's MSE on fresh
  streams is within 2% of the least-squares AR(3) fitted on the same
  training steps (the head's first stage is a linear autoregression on
  the lags, fitted on every labelled step)."""
  rng = np.random.default_rng(9)
  coef = np.array([0.6, -0.3, 0.2])
  train = _ar_batches(coef, B, 12, 4, rng)
  test = _ar_batches(coef, B, 12, 2, rng)
  spec = _spec(task='regression', num_classes=None, output_size=1,
               label_kind='per_step', feature_names=('x',),
               hyperparameters={'kernels': 16}, typical_length=12 * T)
  module = model_io.resolve_module()
  model = model_io.build_stateful(module, spec)
  summary = module.adapt(model, spec, train)
  assert summary['ar_rows'] == summary['labelled_steps'] == 4 * 12 * T * B
  fit, _ = _ar_reference(train, 3)
  _, reference = _ar_reference(test, 3, fit)
  errors = []
  for batch in test:
    if batch['reset'][0]:
      state.zero_all(model)
    out = model(batch['features']).numpy()[..., 0]
    errors.append((out - batch['labels']) ** 2)
  mse = float(np.mean(np.concatenate(errors)))
  assert mse <= 1.02 * reference, (mse, reference, summary)


class _Refit:
  """``model_setup.Refit``'s protocol (``set``), without the trainer."""
  weights = summary = None

  def set(self, weights, summary=None):
    self.weights, self.summary = [np.array(w) for w in weights], summary


def _carve_of(batches, lanes):
  """(held out, marked): the batches with the labelled steps of ``lanes``
  (the carve) unweighted, as the trainer gives adapt for the carve run, and
  the same with those steps as ``carve_weight`` (one pass for both fits)."""
  held, marked = [], []
  for b in batches:
    carve = np.zeros_like(b['label_weight'])
    carve[lanes] = b['label_weight'][lanes]
    rest = b['label_weight'] - carve
    held.append({**b, 'label_weight': rest})
    marked.append({**b, 'label_weight': rest, 'carve_weight': carve})
  return held, marked


@pytest.mark.parametrize('case', ['classification', 'per_step', 'capped'])
def test_one_pass_fits_both_the_carve_run_and_the_refit(monkeypatch, case):
  """``adapt`` with ``refit`` fits, from one pass, the weights a separate
  ``adapt`` fits on the batches without the carve's labels (the model's)
  and on every labelled step (the refit's), bit for bit: the statistics'
  sample (ADAPT_MAX_BATCHES of the batches), the per-step head's Gram
  statistics of every labelled step, and the head's bottom-k sample
  (HEAD_MAX_ROWS below the rows, ``capped``)."""
  monkeypatch.setattr(conv_adapt, 'ADAPT_MAX_BATCHES', 6)
  rng = np.random.default_rng(7)
  if case == 'per_step':
    batches = _ar_batches(np.array([0.6, -0.3]), B, 3, 3, rng)
    spec = _spec(task='regression', num_classes=None, output_size=1,
                 label_kind='per_step', feature_names=('x',),
                 hyperparameters={'kernels': 16, 'lags': 2},
                 typical_length=3 * T)
  else:
    batches = _cue_batches(16, rng)
    spec = _spec(typical_length=2 * T)
  if case != 'classification':
    monkeypatch.setattr(head_rows, 'HEAD_MAX_ROWS', 9 if case == 'capped'
                        else 40)
  held, marked = _carve_of(batches, [1])
  module = model_io.resolve_module()

  def adapted(data, refit=None):
    model = model_io.build_stateful(module, spec)
    summary = module.adapt(model, spec, data, **(
        {'refit': refit} if refit else {}))
    return model.get_weights(), summary

  carve_run, carve_summary = adapted(held)
  every_step, every_summary = adapted(batches)
  refit = _Refit()
  shared, shared_summary = adapted(marked, refit)
  assert shared_summary == carve_summary
  assert refit.summary == every_summary
  assert carve_summary['labelled_steps'] < every_summary['labelled_steps']
  for got, want in zip(shared, carve_run):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(refit.weights, every_step):
    np.testing.assert_array_equal(got, want)
  # The two fits differ (the carve's labels count in the refit's).
  assert any(not np.array_equal(a, b) for a, b in zip(shared, refit.weights))
