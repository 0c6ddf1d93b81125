"""The train split epoch after epoch, read once.

``EpochBatches`` gives ``training.fit`` each epoch's batches in stored
order (``BatchSource.dataset``). Its read pipeline (file reading, parsing,
the label scoring and the validation carve's weights) is built once per run,
not once per epoch, and when the split's decoded batches fit
``IN_MEMORY_BYTES`` they are held in memory after the first full epoch, so
later epochs read and parse no file. The batches are the same tensors either
way: the pipeline is deterministic (the carve is a fixed hash of the key).
With ``shuffle_groups`` every epoch has its own group order, and so its own
pipeline, read from the files.
"""

from __future__ import annotations

import logging
from typing import Optional

import tensorflow as tf

from components.stateful.batches import BatchSource
from components.stateful.batches import STEP_KEYS

_LOG = logging.getLogger(__name__)

# The decoded train split is held in memory when it takes at most this many
# bytes (per process: each replica process or worker holds its own copy).
IN_MEMORY_BYTES = 512 << 20


def decoded_bytes(source: BatchSource, validation_fraction: float) -> int:
  """The bytes of one epoch's batches as ``fit`` reads them: per step the
  features, labels, mask, label weight (and the carve's weight), and the
  reset flags (per lane; ``dense``: per step)."""
  meta = source.meta
  lanes = int(meta['batch_size'])
  steps = lanes * int(meta['num_unroll'])
  label = 8 if meta.get('label_dtype') == 'int64' else 4
  per_step = 4 * int(meta['num_features']) + label + 4 + 4 + (
      4 if validation_fraction > 0 else 0)
  resets = 8 * (steps if meta.get('mode') == 'dense' else lanes)
  return int(meta['num_batches']) * (steps * per_step + resets)


class EpochBatches:
  """``fit``'s batches of each epoch (see the module docstring)."""

  def __init__(self, source: BatchSource, *, shuffle_groups: bool, seed: int,
               label_scoring: str, validation_fraction: float,
               in_memory_bytes: int = IN_MEMORY_BYTES):
    self._source = source
    self._shuffle_groups = shuffle_groups
    self._args = dict(seed=seed, label_scoring=label_scoring,
                      validation_fraction=validation_fraction,
                      keys=STEP_KEYS)
    self._ordered: Optional[tf.data.Dataset] = None
    size = decoded_bytes(source, validation_fraction)
    self.in_memory = not shuffle_groups and size <= in_memory_bytes
    if not shuffle_groups:
      _LOG.info('train split: %d batches, %.1f MB decoded: %s',
                source.num_batches, size / 1e6,
                'held in memory after the first epoch' if self.in_memory
                else f'read from its files every epoch (over '
                f'{in_memory_bytes / 1e6:.0f} MB)')

  def epoch(self, epoch: int, start: int = 0) -> tf.data.Dataset:
    """The batches of ``epoch`` from batch ``start`` on."""
    if self._shuffle_groups:
      return self._source.dataset(epoch=epoch, start=start,
                                  shuffle_groups=True, **self._args)
    if self._ordered is None:
      ds = self._source.dataset(prefetch=False, **self._args)
      self._ordered = (ds.cache() if self.in_memory else ds).prefetch(2)
    return self._ordered.skip(start) if start else self._ordered
