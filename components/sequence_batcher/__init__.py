"""SequenceBatcher: rows or sequences -> fixed-size, ordered, stateful batches.

* ``read_batches`` — the reader the trainer and evaluator use.
* ``beam.BatchSequences`` — the Beam transform (usable in any pipeline).
* ``component.SequenceBatcher`` — the TFX component (imports TFX).
"""

from components.sequence_batcher.layout import LayoutConfig
from components.sequence_batcher.sequences import ColumnConfig
from components.sequence_batcher.sequences import InputDataError


def read_batches(path, split=None, **kwargs):
  """See ``reader.read_batches`` (imported lazily: it loads TensorFlow)."""
  from components.sequence_batcher import reader  # pylint: disable=g-import-not-at-top
  return reader.read_batches(path, split, **kwargs)


def load_metadata(path, split=None):
  """See ``reader.load_metadata``."""
  from components.sequence_batcher import reader  # pylint: disable=g-import-not-at-top
  return reader.load_metadata(path, split)


__all__ = ['ColumnConfig', 'InputDataError', 'LayoutConfig', 'load_metadata',
           'read_batches']
