"""The default model module: streaming random-convolution features and a
linear head (or, as a hyperparameter, a stacked LSTM/GRU).

Used when the StatefulTrainer is given no ``module_file``; also an example
of the module contract (see ``model_spec.py``): ``build_model(spec)`` and
the optional hooks ``adapt(model, spec, batches)`` (fit data-dependent,
non-trainable weights before training) and ``label_scoring(spec)`` (where a
``per_sequence`` label is scored).

``model='conv'`` (the default), per step t of a sequence, every part causal
and streaming exactly through the state protocol:

1. input scaling: per feature ``(x - median) / IQR`` fitted on training steps
   (robust to amplitudes that span orders of magnitude, and independent of
   any affine scaling done upstream, so CSV rows through tf.Transform and
   raw SequenceExamples give the same model), then ``sign(x) log(1 + |x|)``;
2. random causal dilated convolutions (``CausalConv1D``, kernel 9, zero-mean
   normal weights, dilations 1, 2, 4, ... up to ``max_dilation``,
   ``kernels_per_dilation`` each; not trained), as in ROCKET/MiniRocket;
3. running pools over the whole history (``RunningPool``): the proportion of
   each kernel's outputs above a threshold (a random quantile of that
   kernel's output on training data, MiniRocket's PPV) and its running mean;
   running mean and maximum of the scaled input and of its negation, and the
   means of its first 2, 8 and 32 steps (how the sequence began);
4. the last ``lags`` scaled input values (a fixed ``CausalConv1D``) and the
   kernels' current outputs, for per-step targets;
5. the features standardised (fitted on training steps) and a linear head;
   regression outputs are rescaled to the label's units.

The head is fitted in closed form by ``adapt`` (``head='ridge'``, the
default): ridge regression on every labelled training step's features (a
one-vs-rest ridge classifier on +-1 targets for classification, as ROCKET
does), its penalty chosen by leave-one-out error (``ridge.py``), and for
classification a softmax temperature fitted on the leave-one-out scores. The
module's ``default_epochs`` is then 0: no gradient step is needed, and the
same seed gives the same model. An explicit ``epochs`` fine-tunes that head
by gradient descent. ``head='sgd'`` starts the head at zero and trains it
with the trainer's loop (L2 ``l2``), the validation carve and early stopping.

Receptive field from the data: unless ``max_dilation`` is set, the largest
dilation is the largest power of two d with ``(kernel_size - 1) * d`` at most
the median training length minus one (``spec.typical_length``, as MiniRocket
sizes its dilations), capped at 64, and the ``kernels`` random kernels are
shared out evenly over the dilations.

``model='lstm'`` / ``'gru'``: stacked recurrent layers (``units``, an int or a
list) and a Dense head, with optional ``dropout`` between layers and
``head_units``.

Hyperparameters (``spec.hyperparameters``; all optional): ``model``,
``head`` (``ridge``), ``kernels`` (448), ``kernels_per_dilation`` (overrides
``kernels``), ``kernel_size`` (9), ``max_dilation`` (from the data, see
above), ``thresholds_per_kernel`` (4: PPV features per kernel, each with its
own threshold), ``lags`` (16), ``l2`` (1e-2, ``head='sgd'`` only), ``units``
(32), ``rnn_type`` (kept: selects an RNN model when ``model`` is not given),
``dropout`` (0), ``head_units``.

Output: per step, float32[B, T, K]: ``num_classes`` logits or
``output_size`` values.
"""

import itertools
import logging
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful import layers as sl
from components.stateful import ridge
from components.stateful import state

_LOG = logging.getLogger(__name__)

MODELS = ('conv', 'lstm', 'gru')
RNN_TYPES = ('lstm', 'gru')
HEADS = ('ridge', 'sgd')

# Random kernels in all (shared out over the dilations), and the cap on the
# largest dilation.
KERNELS = 448
MAX_DILATION = 64
THRESHOLDS_PER_KERNEL = 4
# Rows (labelled steps) the closed-form head is fitted on, at most; beyond
# this, a uniform random sample of them.
HEAD_MAX_ROWS = 20000

# Training sample used by ``adapt``: batches read in order, steps kept.
ADAPT_MAX_BATCHES = 400
ADAPT_MAX_ROWS = 20000
# How a sequence began: the mean of its first w scaled inputs, per w.
ONSET_STEPS = (2, 8, 32)
# PPV thresholds: the quantile of each kernel's output is drawn from this.
PPV_QUANTILES = (0.1, 0.9)


@keras.utils.register_keras_serializable(package='stateful_trainer')
class SeededDropout(keras.layers.Layer):
  """Dropout with stateless, counter-based masks.

  Mask ``n`` (the n-th training call) is drawn from
  ``stateless_uniform(seed=[seed, n])``; ``n`` lives in a non-trainable
  int64 weight, so it is saved in checkpoints and weights.
  """

  def __init__(self, rate: float, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= float(rate) < 1.0:
      raise ValueError(f'dropout rate must be in [0, 1), got {rate}')
    self.rate = float(rate)
    self.seed = int(seed)

  def build(self, input_shape):
    self.counter = self.add_weight(
        name='counter', shape=(), dtype=tf.int64,
        initializer=keras.initializers.Zeros(), trainable=False)
    super().build(input_shape)

  def _dropped(self, inputs):
    seed = tf.stack([tf.constant(self.seed, tf.int64),
                     self.counter.read_value()])
    keep = tf.random.stateless_uniform(tf.shape(inputs), seed=seed) >= (
        self.rate)
    self.counter.assign_add(1)
    return tf.where(keep, inputs / (1.0 - self.rate), tf.zeros_like(inputs))

  def call(self, inputs, training=None):
    if self.rate == 0.0 or training is None or training is False:
      return inputs
    if training is True:
      return self._dropped(inputs)
    return tf.cond(tf.cast(training, tf.bool), lambda: self._dropped(inputs),
                   lambda: tf.identity(inputs))

  def get_config(self):
    return {**super().get_config(), 'rate': self.rate, 'seed': self.seed}


def _units(value) -> List[int]:
  units = [value] if isinstance(value, int) else list(value)
  if not units or any(not isinstance(u, int) or u < 1 for u in units):
    raise ValueError(f'units must be a positive int or a list of them, got '
                     f'{value!r}')
  return units


def model_kind(spec) -> str:
  """``conv``, ``lstm`` or ``gru`` from the hyperparameters."""
  hp = spec.hyperparameters
  kind = hp.get('model')
  if kind is None:
    kind = hp.get('rnn_type', 'conv')
  kind = str(kind).lower()
  if kind not in MODELS:
    raise ValueError(f'model must be one of {MODELS}, got {kind!r}')
  return kind


def label_scoring(spec) -> str:
  """Where a ``per_sequence`` label is scored in training.

  The conv model's trainable part reads running pools, so the last step is
  the example (every-step replication measured worse); recurrent models get
  no gradient before the last segment from it under truncated BPTT, so they
  score every step with weights growing toward the end.
  """
  return 'last_step' if model_kind(spec) == 'conv' else 'weighted'


def _dilations(max_dilation: int) -> List[int]:
  out, d = [], 1
  while d <= max_dilation:
    out.append(d)
    d *= 2
  return out


def head_kind(spec) -> str:
  """``ridge`` or ``sgd``: how the conv model's head is fitted."""
  head = str(spec.hyperparameters.get('head', 'ridge')).lower()
  if head not in HEADS:
    raise ValueError(f'head must be one of {HEADS}, got {head!r}')
  return head


def kernel_layout(spec) -> Tuple[List[int], int]:
  """(dilations, kernels per dilation) of the conv model; see the module
  docstring for the rule."""
  hp = spec.hyperparameters
  size = int(hp.get('kernel_size', 9))
  if hp.get('max_dilation') is not None:
    top = int(hp['max_dilation'])
  elif spec.typical_length:
    top = max(1, min(MAX_DILATION,
                     (int(spec.typical_length) - 1) // max(1, size - 1)))
  else:
    top = MAX_DILATION
  dilations = _dilations(top)
  per = hp.get('kernels_per_dilation')
  if per is None:
    per = -(-int(hp.get('kernels', KERNELS)) // len(dilations))
  return dilations, int(per)


def default_epochs(spec) -> Optional[int]:
  """Epochs when the user sets none: 0 for the conv model with a ridge head
  (``adapt`` fits it; nothing is left for gradient steps), else None (the
  trainer's epochs rule)."""
  if model_kind(spec) == 'conv' and head_kind(spec) == 'ridge':
    return 0
  return None


def _build_conv(spec, inputs) -> tf.Tensor:
  hp = spec.hyperparameters
  seed = int(spec.seed)
  dilations, per = kernel_layout(spec)
  size = int(hp.get('kernel_size', 9))
  lags = int(hp.get('lags', 16))
  l2 = float(hp.get('l2', 1e-2))
  stateful = spec.stateful
  scaled = sl.Standardize(name='input_scale')(inputs)
  x = sl.SignedLog(name='signed_log')(scaled)
  convs = [
      sl.CausalConv1D(per, size, dilation_rate=d, use_bias=False,
                      kernel_initializer=sl.CenteredNormal(seed * 7919 + d),
                      trainable=False, stateful=stateful,
                      name=f'conv_d{d}')(x)
      for d in dilations]
  h = keras.layers.Concatenate(name='conv_outputs')(convs)
  conv_stats = tuple(hp.get('conv_stats', ('ppv',)))
  copies = int(hp.get('thresholds_per_kernel', THRESHOLDS_PER_KERNEL))
  pool_in = h if copies == 1 else keras.layers.Concatenate(
      name='conv_copies')([h] * copies)
  pooled = sl.RunningPool(conv_stats, stateful=stateful,
                          name='conv_pool')(pool_in)
  signed = keras.layers.Concatenate(name='input_signed')(
      [x, keras.layers.Lambda(lambda t: -t, name='negate')(x)])
  input_pool = sl.RunningPool(('mean', 'max'), stateful=stateful,
                              name='input_pool')(signed)
  onsets = [sl.RunningPool(('head_mean',), head_steps=w, stateful=stateful,
                           name=f'onset_{w}')(x) for w in ONSET_STEPS]
  parts = [pooled, input_pool] + onsets
  step_features = hp.get('step_features')
  if step_features is None:
    step_features = spec.label_kind == 'per_step'
  if step_features:
    parts.append(h)
  if step_features and lags > 0:
    parts.append(sl.CausalConv1D(
        lags * spec.num_features, lags, use_bias=False,
        kernel_initializer=sl.LagKernel(), trainable=False, stateful=stateful,
        name='lags')(scaled))
  feats = keras.layers.Concatenate(name='features_all')(parts)
  feats = sl.Standardize(name='feature_scale')(feats)
  out = keras.layers.Dense(
      spec.output_units, kernel_initializer='zeros',
      kernel_regularizer=(keras.regularizers.l2(l2) if l2 > 0 and
                          head_kind(spec) == 'sgd' else None),
      name='head')(feats)
  if spec.task == 'regression':
    out = sl.Standardize(inverse=True, name='label_scale')(out)
  return out


def _build_rnn(spec, inputs, rnn_type: str) -> tf.Tensor:
  hp = spec.hyperparameters
  units = _units(hp.get('units', 32))
  dropout = float(hp.get('dropout', 0.0))
  head_units = hp.get('head_units')
  seed = int(spec.seed)
  layer_cls = keras.layers.LSTM if rnn_type == 'lstm' else keras.layers.GRU
  x = inputs
  for i, size in enumerate(units):
    if i > 0 and dropout > 0.0:
      x = SeededDropout(dropout, seed=seed * 1009 + i,
                        name=f'dropout_{i}')(x)
    x = layer_cls(
        size, return_sequences=True, stateful=spec.stateful,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 7 * i),
        recurrent_initializer=keras.initializers.Orthogonal(
            seed=seed + 7 * i + 1),
        name=f'{rnn_type}_{i}')(x)
  if head_units:
    x = keras.layers.Dense(
        int(head_units), activation='relu',
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 501),
        name='hidden')(x)
  return keras.layers.Dense(
      spec.output_units,
      kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 503),
      name='head')(x)


def build_model(spec) -> keras.Model:
  """See the module docstring.

  Args:
    spec: a ``ModelSpec``.

  Returns:
    A Keras 2 model ``features float32[B, T, F] -> float32[B, T, K]``.
  """
  kind = model_kind(spec)
  inputs = keras.Input(shape=(spec.num_unroll, spec.num_features),
                       batch_size=spec.batch_size, name='features')
  if kind == 'conv':
    return keras.Model(inputs, _build_conv(spec, inputs),
                       name='streaming_conv')
  return keras.Model(inputs, _build_rnn(spec, inputs, kind),
                     name=f'stacked_{kind}')


# --------------------------------------------------------------------------
# adapt: data-fitted, non-trainable weights (before training)
# --------------------------------------------------------------------------


def _collect(model: keras.Model, outputs: tf.Tensor,
             batches: Iterable[Mapping[str, Any]], where: str) -> np.ndarray:
  """Runs the stateful ``model`` in lane order and collects ``outputs`` at
  real steps (``where='mask'``) or labelled steps (``'label_weight'``)."""
  probe = keras.Model(model.inputs, outputs)

  @tf.function(autograph=False)
  def run(features, reset):
    state.reset_lanes(model, reset)
    return probe(features, training=False)

  state.zero_all(model)
  rows: List[np.ndarray] = []
  for batch in batches:
    out = run(tf.constant(batch['features']), tf.constant(batch['reset']))
    sel = np.asarray(batch[where]) > 0
    if sel.any():
      rows.append(out.numpy()[sel])
  state.zero_all(model)
  if not rows:
    raise ValueError(f'adapt: no step with {where} > 0 in the sample')
  return np.concatenate(rows)


def _subsample(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  if rows.shape[0] <= ADAPT_MAX_ROWS:
    return rows
  return rows[np.sort(rng.choice(rows.shape[0], ADAPT_MAX_ROWS,
                                 replace=False))]


def _head_rows(model: keras.Model, batches: Iterable[Mapping[str, Any]],
               rng: np.random.Generator):
  """The head's input, label and sequence (an int per sequence) at every
  labelled step of ``batches`` (one pass, in lane order), thinned to a uniform sample of at most
  ``HEAD_MAX_ROWS`` rows: whenever the kept rows pass twice the cap, a random
  half is dropped and later rows are kept with half the probability."""
  probe = keras.Model(model.inputs, model.get_layer('feature_scale').output)

  @tf.function(autograph=False)
  def run(features, reset):
    state.reset_lanes(model, reset)
    return probe(features, training=False)

  state.zero_all(model)
  xs: List[np.ndarray] = []
  ys: List[np.ndarray] = []
  gs: List[np.ndarray] = []
  keep, kept, seen, started = 1.0, 0, 0, time.monotonic()
  sequence = None  # Per lane: the number of sequences started so far.
  for i, batch in enumerate(batches):
    # Every batch runs (the state must follow every step); labelled steps
    # are kept, with their sequence (lane, count of resets) as group.
    out = run(tf.constant(batch['features']), tf.constant(batch['reset']))
    reset = np.asarray(batch['reset']).astype(np.int64)
    if sequence is None:
      sequence = np.zeros(reset.shape[0], np.int64)
    sequence += reset
    sel = np.asarray(batch['label_weight']) > 0
    if not sel.any():
      continue
    lanes = np.nonzero(sel)[0]
    x, y = out.numpy()[sel], np.asarray(batch['labels'])[sel]
    g = lanes * (1 << 32) + sequence[lanes]
    seen += x.shape[0]
    if keep < 1.0:
      pick = rng.random(x.shape[0]) < keep
      x, y, g = x[pick], y[pick], g[pick]
    xs.append(x)
    ys.append(y)
    gs.append(g)
    kept += x.shape[0]
    if kept > 2 * HEAD_MAX_ROWS:
      x, y, g = np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)
      pick = rng.random(x.shape[0]) < 0.5
      xs, ys, gs = [x[pick]], [y[pick]], [g[pick]]
      kept, keep = int(pick.sum()), keep / 2
    if (i + 1) % 1000 == 0:
      _LOG.info('head features: %d batches, %d labelled steps (%.0f '
                'batches/s)', i + 1, seen,
                (i + 1) / max(time.monotonic() - started, 1e-9))
  state.zero_all(model)
  if not xs:
    raise ValueError('adapt: no labelled step in the train split')
  return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs), seen


def _fit_head(model: keras.Model, spec, batches: Iterable[Mapping[str, Any]],
              rng: np.random.Generator) -> Dict[str, Any]:
  """Ridge head (see the module docstring) on every labelled step."""
  x, y, groups, seen = _head_rows(model, batches, rng)
  # Per-step labels: hold whole sequences out when choosing the penalty.
  groups = groups if spec.label_kind == 'per_step' else None
  if spec.task == 'classification':
    fit = ridge.fit(x, ridge.one_hot_targets(y, spec.num_classes),
                    groups=groups)
    scale = ridge.temperature(fit.loo_predictions, y)
  else:
    scaler = model.get_layer('label_scale')
    mean = scaler.center.numpy().astype(np.float64)
    std = scaler.scale.numpy().astype(np.float64)
    z = (np.asarray(y, np.float64).reshape(len(y), -1) - mean) / std
    fit = ridge.fit(x, np.broadcast_to(z, (len(y), spec.output_units)),
                    groups=groups)
    scale = 1.0
  model.get_layer('head').set_weights([
      (scale * fit.weights).astype(np.float32),
      (scale * fit.bias).astype(np.float32)])
  return {'head_rows': int(x.shape[0]), 'labelled_steps': int(seen),
          'ridge_alpha': fit.alpha, 'loo_mse': round(fit.loo_error, 6),
          'temperature': scale}


def adapt(model: keras.Model, spec, batches: Iterable[Mapping[str, Any]]
         ) -> Dict[str, Any]:
  """Fits the conv model's data-dependent weights on the train split.

  ``batches`` are numpy dicts (``features``, ``reset``, ``mask``,
  ``label_weight``, ``labels``) in lane order from the start of the train
  split. The statistics read the first ``ADAPT_MAX_BATCHES``; the ridge head
  reads every batch in a second pass when ``batches`` can be iterated again
  (a one-shot iterator: the head is fitted on that sample). Deterministic for
  a given seed. The RNN models have nothing to fit.

  Returns:
    A short summary (for the log).
  """
  if model_kind(spec) != 'conv':
    return {}
  sample = list(itertools.islice(batches, ADAPT_MAX_BATCHES))
  rng = np.random.default_rng(int(spec.seed) + 12345)
  layer = model.get_layer
  # 1. Robust input scale: median and interquartile range per feature.
  raw = np.concatenate([b['features'][b['mask'] > 0] for b in sample])
  raw = _subsample(raw, rng)
  q25, med, q75 = np.percentile(raw, [25, 50, 75], axis=0)
  iqr = q75 - q25
  spread = np.where(iqr > 0, iqr, raw.std(axis=0))
  layer('input_scale').set_statistics(med, spread)
  # 2. PPV thresholds: a random quantile of each kernel's output (of each
  # copy of it, one threshold per copy).
  conv = _subsample(_collect(model, layer('conv_pool').input, sample,
                             'mask'), rng)
  qs = rng.uniform(*PPV_QUANTILES, size=conv.shape[1])
  thresholds = np.array([np.quantile(conv[:, c], qs[c])
                         for c in range(conv.shape[1])])
  layer('conv_pool').threshold.assign(thresholds.astype(np.float32))
  # 3. Feature standardisation, on the steps the loss reads.
  where = 'label_weight'
  feats = _subsample(_collect(model, layer('features_all').output, sample,
                              where), rng)
  layer('feature_scale').set_statistics(feats.mean(axis=0),
                                        feats.std(axis=0) + 1e-3)
  # 4. Regression: outputs in the label's units.
  if spec.task == 'regression':
    labels = np.concatenate(
        [np.asarray(b['labels'], np.float64)[b[where] > 0] for b in sample])
    layer('label_scale').set_statistics(
        np.full([spec.output_units], labels.mean()),
        np.full([spec.output_units], labels.std() or 1.0))
  summary = {'sample_batches': len(sample), 'input_rows': int(raw.shape[0]),
             'conv_rows': int(conv.shape[0]), 'feature_rows': int(
                 feats.shape[0]), 'features': int(feats.shape[1])}
  # 5. The head, in closed form.
  if head_kind(spec) == 'ridge':
    one_shot = iter(batches) is batches
    summary.update(_fit_head(model, spec, sample if one_shot else batches,
                             rng))
  return summary
