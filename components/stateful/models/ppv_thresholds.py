"""The PPV thresholds of the default conv model (step 2 of its ``adapt``,
``conv_adapt.py``): the thresholds' pass samples the kernels' outputs
(``kernel_outputs``: which tensor, and how many copies the PPV pool reads),
and each PPV column's threshold is a random quantile of its kernel's
sampled outputs (``fit_thresholds``).
"""

from typing import Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.stateful.distribution import shards
from components.stateful.models import adapt_passes
from components.stateful.models import row_sampling

# The quantile of each kernel's output is drawn from this.
PPV_QUANTILES = (0.1, 0.9)


def kernel_outputs(model: keras.Model) -> Tuple[tf.Tensor, int]:
  """The kernels' outputs (``conv_outputs``, ``[B, T, U]``) and how many
  copies of them the PPV pool reads: its input is the copies side by side,
  so its column c is kernel ``c % U``'s output."""
  kernels = model.get_layer('conv_outputs').output
  pooled = model.get_layer('conv_pool').input
  copies = int(pooled.shape[-1]) // int(kernels.shape[-1])
  inputs = [pooled] if copies == 1 else model.get_layer('conv_copies').input
  if len(inputs) != copies or any(t is not kernels for t in inputs):
    raise ValueError('adapt: the PPV pool does not read copies of '
                     'conv_outputs')
  return kernels, copies


def _conv_rows(model: keras.Model, run, sample: Sequence[Mapping],
               shard: shards.Shard, rng: np.random.Generator,
               max_rows: int) -> np.ndarray:
  """The thresholds' pass: a uniform sample of at most ``max_rows`` of the
  kernels' outputs (``run``'s first, ``kernel_outputs``) at the real
  steps of ``sample``."""
  steps = adapt_passes.weighted_steps
  rows = row_sampling.Uniform(shard, [steps(b['mask']).size for b in sample],
                              rng, max_rows)
  for i, (batch, (conv, _)) in enumerate(adapt_passes.stream(model, run,
                                                             sample)):
    conv = conv.numpy()
    rows.add(i, conv.reshape(-1, conv.shape[-1]), steps(batch['mask']))
  out = rows.gather()
  if not out.shape[0]:
    raise ValueError('adapt: no step with mask > 0 in the sample')
  return out


def _thresholds(kernels: np.ndarray, qs: np.ndarray) -> np.ndarray:
  """``np.quantile`` of each PPV column c at ``qs[c]`` (float64[U *
  copies]) from the kernels' sampled outputs ``[N, U]`` (column c reads
  kernel ``c % U``): one partition per kernel for the quantiles of all its
  copies (NumPy gives each the bits it gives it alone)."""
  width = kernels.shape[1]
  out = np.empty(qs.size)
  for u in range(width):
    out[u::width] = np.quantile(kernels[:, u], qs[u::width])
  return out


def fit_thresholds(model: keras.Model, run, sample: Sequence[Mapping],
                   shard: shards.Shard, rng: np.random.Generator,
                   copies: int, max_rows: int) -> int:
  """Sets the PPV thresholds of ``model``: a random quantile (drawn from
  ``PPV_QUANTILES`` by ``rng``) of each kernel's output, one threshold per
  copy of it, from the thresholds' pass over ``sample`` (``run``:
  ``adapt_passes.runner`` with ``kernel_outputs`` first). Returns the
  number of sampled rows."""
  conv = _conv_rows(model, run, sample, shard, rng, max_rows)
  qs = rng.uniform(*PPV_QUANTILES, size=conv.shape[1] * copies)
  thresholds = _thresholds(conv, qs)
  model.get_layer('conv_pool').threshold.assign(
      thresholds.astype(np.float32))
  try:  # The decaying PPV reads the kernels once: the first copy's.
    recent = model.get_layer('recent_conv')
  except ValueError:
    recent = None
  if recent is not None:
    recent.threshold.assign(
        thresholds[:recent.threshold.shape[0]].astype(np.float32))
  return int(conv.shape[0])
