"""The default model module: streaming random-convolution features and a
linear head (or, as a hyperparameter, a stacked LSTM/GRU or a stack of
linear recurrent units).

Used when the StatefulTrainer is given no ``module_file``; also an example
of the module contract (see ``model_spec.py``): ``build_model(spec)`` and
the optional hooks ``adapt(model, spec, batches, shard=None)`` (fit
data-dependent, non-trainable weights before training; ``shard``: this
worker's part on several workers, ``components.stateful.distribution.shards``),
``label_scoring(spec)`` (where a ``per_sequence`` label is scored),
``default_epochs``, ``scales_labels``, ``optimizer_defaults`` and
``hyperparameter_keys`` (every hook: ``module_contract.HOOKS``).

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
4. for per-step targets: the recent past (``DecayingPool``: exponentially
   decaying PPV of each kernel and decaying means of the scaled input and
   of its square, at half-lives ``half_lives``; a stream's content may
   change, and the whole-history pools cannot forget), the kernels' current
   outputs and the last ``lags`` scaled input values (a fixed
   ``CausalConv1D``);
5. the features standardised (fitted on training steps) and a linear head;
   regression outputs are rescaled to the label's units.

The head is fitted in closed form by ``adapt`` (``head='ridge'``, the
default): ridge regression on every labelled training step's features (a
one-vs-rest ridge classifier on +-1 targets for classification, as ROCKET
does), its penalty chosen by leave-one-out error (``ridge.py``), and for
classification a softmax temperature fitted on the leave-one-out scores.
Per-step regression fits it in two stages (``head_rows.fit_head``): a
linear autoregression on the lag columns alone from Gram statistics of every
labelled step (so persistence and any linear AR on the lags are represented
exactly, not shrunk with thousands of other features), then the other
features on its residual, kept only when that helps held-out sequences.

The closed form is then fine-tuned statefully (truncated BPTT through the
trainer's loop, ``default_epochs`` = ``FINE_TUNE_EPOCHS``, SGD at
``FINE_TUNE_LEARNING_RATE`` unless ``optimizer`` / ``learning_rate`` are
set): the trainer
scores the closed form on the validation carve before the first epoch
(fitted without the carve's labels) and keeps an epoch only if it scores
better, so fine-tuning never exports a model the carve rates below the
closed form; the log says which was kept. The same seed gives the same
model. ``head='sgd'`` starts the head at zero and trains it with the
trainer's loop (L2 ``l2``), the validation carve and early stopping.

Receptive field from the data: unless ``max_dilation`` is set, the largest
dilation is the largest power of two d with ``(kernel_size - 1) * d`` at most
the median training length minus one (``spec.typical_length``, as MiniRocket
sizes its dilations), capped at 64, and the ``kernels`` random kernels are
shared out evenly over the dilations.

``model='lstm'`` / ``'gru'``: stacked recurrent layers (``units``, an int or a
list) and a Dense head, with optional ``dropout`` between layers and
``head_units``.

``model='lru'``: a Dense encoder to ``units`` channels (an int; fan-in
initialised, so that each channel starts at unit variance for standardised
features), then ``blocks`` residual blocks, each ``x + GLU(GELU(
LinearRecurrence(LayerNorm(x))))`` (``lru.LinearRecurrence`` with
``state_size`` complex state dimensions, eigenvalue moduli initially on the
ring ``[r_min, r_max]``, phases in ``(0, max_phase]``; the layer norm is
over each step's channels alone, so nothing but the recurrence mixes time
steps; the first block reads the encoder's output itself unless
``first_norm``: a layer norm over the channels of one encoded feature, a
rank-1 vector with a zero bias at initialisation, leaves its sign and not
its magnitude), optional
``dropout`` after each block, and a Dense head (Glorot; zero with
``zero_head``: the residual stream is not normalised, and a Glorot head on
it starts with logits of a few units, a loss above the class prior's).
Trained by the trainer's loop, as the RNN models.

Hyperparameters (``spec.hyperparameters``; all optional): ``model``,
``head`` (``ridge``), ``kernels`` (448), ``kernels_per_dilation`` (overrides
``kernels``), ``kernel_size`` (9), ``max_dilation`` (from the data, see
above), ``thresholds_per_kernel`` (4: PPV features per kernel, each with its
own threshold; 1 for per-step labels, whose head reads the decaying PPVs
too and is fitted on many more rows), ``half_lives`` (8, 32, 128, 512; per-step
labels only), ``lags`` (16), ``l2`` (1e-2, ``head='sgd'`` only), ``units``
(32), ``rnn_type`` (kept: selects an RNN model when ``model`` is not given),
``dropout`` (0), ``head_units``; ``model='lru'`` only: ``state_size``
(64), ``blocks`` (2), ``first_norm`` (false), ``zero_head`` (false),
``r_min`` (0.9), ``r_max`` (0.999), ``max_phase`` (2 pi).

Output: per step, float32[B, T, K]: ``num_classes`` logits or
``output_size`` values.
"""

import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import tensorflow as tf
import tf_keras as keras

from components.stateful import batches as batches_lib
from components.stateful.layers import convolution
from components.stateful.layers import elementwise
from components.stateful.layers import pools
from components.stateful.models import conv_adapt
from components.stateful.models import hyperparameters as hp_lib
from components.stateful.models import recurrent_models

MODELS = ('conv', 'lstm', 'gru', 'lru')
_LOG = logging.getLogger(__name__)
RNN_TYPES = ('lstm', 'gru')
HEADS = ('ridge', 'sgd')

# Random kernels in all (shared out over the dilations), and the cap on the
# largest dilation.
KERNELS = 448
MAX_DILATION = 64
THRESHOLDS_PER_KERNEL = 4
# How a sequence began: the mean of its first w scaled inputs, per w.
ONSET_STEPS = (2, 8, 32)
# Fine-tuning of the closed-form head (conv model, ridge head): epochs at
# most, and the SGD learning rate.
FINE_TUNE_EPOCHS = 5
FINE_TUNE_LEARNING_RATE = 1e-3
# Per-step labels: half-lives (steps) of the decaying pools (the recent past).
HALF_LIVES = (8, 32, 128, 512)


def model_kind(spec) -> str:
  """``conv``, ``lstm``, ``gru`` or ``lru`` from the hyperparameters."""
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
  no gradient before the last segment from it under truncated BPTT, so on
  sequences of several segments they score every step with weights growing
  toward the end (``batches.recurrent_scoring``, the trainer's rule for
  every module).
  """
  kind = model_kind(spec)
  if kind == 'conv':
    return 'last_step'
  scoring, why = batches_lib.recurrent_scoring(spec)
  _LOG.info('default module, %s model: per-sequence labels scored %s: %s',
            kind, scoring, why)
  return scoring


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
  """Epochs when the user sets none: for the conv model with a ridge head,
  ``FINE_TUNE_EPOCHS`` of stateful fine-tuning of the head from its closed
  form (the trainer scores the closed form on the validation carve first
  and keeps an epoch only if it does better, ``TrainConfig.score_initial``;
  so "no epoch" is one of the choices), else None (the trainer's epochs
  rule)."""
  if model_kind(spec) == 'conv' and head_kind(spec) == 'ridge':
    return FINE_TUNE_EPOCHS
  return None


def scales_labels(spec) -> bool:
  """True for the conv model: its ``label_scale`` layer (fitted by
  ``adapt``) maps its outputs to label units, so the trainer does not
  standardise regression labels for it."""
  return model_kind(spec) == 'conv'


# Hyperparameters read that ``--help`` does not list: ``rnn_type`` (kept
# for old configurations), and the conv model's ablation switches.
UNLISTED_KEYS = ('rnn_type', 'conv_stats', 'step_features')


def hyperparameter_keys(spec) -> Tuple[str, ...]:
  """The ``spec.hyperparameters`` keys this module reads (with the
  trainer's optimizer keys, those of ``hyperparameters.DEFAULT_MODEL``, and
  ``UNLISTED_KEYS``); any other key is refused up front. Also checks the
  values that choose the model: ``model`` (``MODELS``) and, for the conv
  model, ``head`` (``HEADS``), raising ``ValueError``."""
  if model_kind(spec) == 'conv':
    head_kind(spec)
  return tuple(name for name, _, _ in hp_lib.DEFAULT_MODEL) + UNLISTED_KEYS


def optimizer_defaults(spec) -> Dict[str, Any]:
  """Optimizer settings unless the hyperparameters set them: fine-tuning
  the closed-form head uses plain SGD at ``FINE_TUNE_LEARNING_RATE``, the
  rest from the trainer's ``OptimizerConfig``. Adam moves each of the
  head's thousands of weights by about its learning rate per step whatever
  the gradient: at 1e-2 (the trainer's default then) it threw the closed
  form far off in the first epoch (carve accuracy 0.94 -> 0.70
  on the bundled sample, carve MSE 0.098 -> 18.0 on ACSF1 forecasting;
  smaller Adam rates were not measured). SGD on standardised features
  moves it along the gradient, stable while the rate is below 2 / (the
  largest eigenvalue of the features' second moment), at most 2 / (their
  number)."""
  if model_kind(spec) == 'conv' and head_kind(spec) == 'ridge':
    return {'optimizer': 'sgd', 'learning_rate': FINE_TUNE_LEARNING_RATE}
  return {}


def _build_conv(spec, inputs) -> tf.Tensor:
  hp = spec.hyperparameters
  seed = int(spec.seed)
  dilations, per = kernel_layout(spec)
  size = int(hp.get('kernel_size', 9))
  lags = int(hp.get('lags', 16))
  l2 = float(hp.get('l2', 1e-2))
  stateful = spec.stateful
  scaled = elementwise.Standardize(name='input_scale')(inputs)
  x = elementwise.SignedLog(name='signed_log')(scaled)
  convs = [
      convolution.CausalConv1D(per, size, dilation_rate=d, use_bias=False,
                      kernel_initializer=convolution.CenteredNormal(seed * 7919 + d),
                      trainable=False, stateful=stateful,
                      name=f'conv_d{d}')(x)
      for d in dilations]
  h = keras.layers.Concatenate(name='conv_outputs')(convs)
  conv_stats = tuple(hp.get('conv_stats', ('ppv',)))
  copies = int(hp.get('thresholds_per_kernel', THRESHOLDS_PER_KERNEL
                      if spec.label_kind != 'per_step' else 1))
  pool_in = h if copies == 1 else keras.layers.Concatenate(
      name='conv_copies')([h] * copies)
  pooled = pools.RunningPool(conv_stats, stateful=stateful,
                          name='conv_pool')(pool_in)
  signed = keras.layers.Concatenate(name='input_signed')(
      [x, keras.layers.Lambda(lambda t: -t, name='negate')(x)])
  input_pool = pools.RunningPool(('mean', 'max'), stateful=stateful,
                              name='input_pool')(signed)
  onsets = [pools.RunningPool(('head_mean',), head_steps=w, stateful=stateful,
                           name=f'onset_{w}')(x) for w in ONSET_STEPS]
  parts = [pooled, input_pool] + onsets
  step_features = hp.get('step_features')
  if step_features is None:
    step_features = spec.label_kind == 'per_step'
  half_lives = tuple(hp.get('half_lives', HALF_LIVES)) if step_features else ()
  if half_lives:
    # The recent past (a stream's content may change): decaying PPV of
    # each kernel (one threshold each: the first copy's) and decaying means
    # of the scaled input and of its square.
    parts.append(pools.DecayingPool(('ppv',), half_lives=half_lives,
                                 stateful=stateful, name='recent_conv')(h))
    square = keras.layers.Lambda(lambda t: t * t, name='square')(x)
    parts.append(pools.DecayingPool(
        ('mean',), half_lives=half_lives, stateful=stateful,
        name='recent_input')(keras.layers.Concatenate(name='input_moments')(
            [x, square])))
  if step_features:
    parts.append(h)
  if step_features and lags > 0:
    parts.append(convolution.CausalConv1D(
        lags * spec.num_features, lags, use_bias=False,
        kernel_initializer=convolution.LagKernel(), trainable=False, stateful=stateful,
        name='lags')(scaled))
  feats = keras.layers.Concatenate(name='features_all')(parts)
  feats = elementwise.Standardize(name='feature_scale')(feats)
  out = keras.layers.Dense(
      spec.output_units, kernel_initializer='zeros',
      kernel_regularizer=(keras.regularizers.l2(l2) if l2 > 0 and
                          head_kind(spec) == 'sgd' else None),
      name='head')(feats)
  if spec.task == 'regression':
    out = elementwise.Standardize(inverse=True, name='label_scale')(out)
  return out


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
  if kind == 'lru':
    return keras.Model(inputs, recurrent_models.build_lru(spec, inputs),
                       name='stacked_lru')
  return keras.Model(inputs, recurrent_models.build_rnn(spec, inputs, kind),
                     name=f'stacked_{kind}')


def adapt(model: keras.Model, spec, batches: Iterable[Mapping[str, Any]],
          shard=None, refit=None) -> Dict[str, Any]:
  """The module's ``adapt`` hook: fits the conv model's data-dependent
  weights on the train split (``conv_adapt.adapt_conv``: scales, PPV
  thresholds, and the ridge head unless ``head='sgd'``). The RNN models have
  nothing to fit. It takes ``shard`` (``components.stateful.distribution.shards``): on
  several workers, ``batches`` and ``model`` hold this worker's lanes and
  the statistics are combined across the workers. It takes ``refit`` (the
  trainer's ``model_setup.Refit``): the batches also carry the validation
  carve's labelled steps as ``carve_weight``, and the same passes fit the
  weights of every labelled step for the refit (``refit.set``), so a run
  with a carve adapts once.

  Returns:
    A short summary (for the log).
  """
  if model_kind(spec) != 'conv':
    return {}
  return conv_adapt.adapt_conv(model, spec, batches,
                               fit_head=head_kind(spec) == 'ridge',
                               shard=shard, refit=refit)
