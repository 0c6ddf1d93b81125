"""Classification labels in the input check (``input_check.py``).

CSV labels are read as the pipeline's Transform will read them: text, or
whole numbers, each a class of the training rows' vocabulary, ordered as
``transform_module.class_order`` orders it (``vocabulary``); every split's
labels are replaced by their indices before the sequences are built
(``apply_vocabulary``), so the batcher's rules see indices and errors name
the labels as written. SequenceExamples, which no Transform reads, carry
class indices (``check_class_indices``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from components.sequence_batcher import sequences as seqlib
from pipeline import pipeline_config

InputDataError = seqlib.InputDataError


def check_class_indices(config: pipeline_config.PipelineConfig,
                        built: Dict[str, Dict[str, Tuple[str, Any]]]
                       ) -> Optional[int]:
  """Classification labels read without a class vocabulary (from
  SequenceExamples, which no Transform reads): class indices (integers from
  0), every eval class seen in training, and not a sparse handful of huge
  indices.

  Returns:
    The number of classes (classification), else None.
  """
  if not config.label_column or config.task != 'classification':
    return None
  lc = config.label_column
  train_classes = set()
  for split, sequences in built.items():
    for key, (source, seq) in sequences.items():
      labels = seq.labels
      if labels.dtype.kind == 'f':
        bad = labels != np.round(labels)
        if bad.any():
          i = int(np.argmax(bad))
          raise InputDataError(
              f'{source}: sequence {key!r} step {i}: the label {lc!r} is '
              f'{float(labels[i])!r}, not a class index (classification '
              'needs integer labels 0, 1, ...; use --task regression for a '
              'numeric target)')
      if labels.size and labels.min() < 0:
        i = int(np.argmax(labels < 0))
        raise InputDataError(
            f'{source}: sequence {key!r} step {i}: the label {lc!r} is '
            f'{labels[i]!r}; class indices start at 0')
      if split != 'eval':
        train_classes.update(np.unique(labels).astype(np.int64).tolist())
  if not train_classes:
    return None
  top = max(train_classes)
  if top + 1 > 100 and top + 1 > 2 * len(train_classes):
    raise InputDataError(
        f'{config.data_root}: the labels {lc!r} of the training split make '
        f'{top + 1} classes (0 to {top}) of which {len(train_classes)} occur; '
        'classification labels are class indices 0..K-1: renumber them')
  for key, (source, seq) in built.get('eval', {}).items():
    unseen = ~np.isin(seq.labels.astype(np.int64), list(train_classes))
    if unseen.any():
      i = int(np.argmax(unseen))
      raise InputDataError(
          f'{source}: sequence {key!r} step {i}: the label {lc!r} is '
          f'{seq.labels[i]!r}, a class the training split does not have '
          f'(it has {sorted(train_classes)[:20]})')
  return max(top + 1, 2)


def _class_text(value) -> Optional[str]:
  """A class label as text, as the pipeline's Transform reads it (integers
  and integral floats as integers, text stripped); None for a number that
  is not a whole number."""
  if isinstance(value, bytes):
    value = value.decode('utf-8', 'replace')
  if isinstance(value, str):
    return value.strip()
  number = float(value)
  if not np.isfinite(number) or number != np.round(number):
    return None
  return str(int(number))


def _class_texts(chunk: seqlib.RowChunk, label: str,
                 order: Optional[str]) -> List[Optional[str]]:
  """The chunk's class labels as text (None where a row has none); a label
  that is not a class is an error naming the row."""
  values = chunk.columns[label].tolist()
  hole = chunk.missing.get(label)
  out, cache = [], {}
  for i, v in enumerate(values):
    if hole is not None and hole[i]:
      out.append(None)
      continue
    text = cache[v] if v in cache else cache.setdefault(v, _class_text(v))
    if text is None:
      raise InputDataError(
          f'{chunk.source}: sequence {chunk.key!r}{_row(chunk, order, i)}: '
          f'the label {label!r} is {v!r}, not a class (classification '
          'labels are whole numbers or text; use --task regression for a '
          'numeric target)')
    out.append(text)
  return out


def _row(chunk: seqlib.RowChunk, order: Optional[str], i: int) -> str:
  if order and order in chunk.columns:
    return f' at order value {chunk.columns[order][i]}'
  return f' row {i}'


def vocabulary(config: pipeline_config.PipelineConfig,
                      chunks_by_split: Dict[str, List[seqlib.RowChunk]],
                      in_train) -> Dict[str, int]:
  """The classes of the training rows, in the order Transform gives them
  (``transform_module.class_order``): name -> index."""
  from pipeline import transform_module  # pylint: disable=g-import-not-at-top
  lc = config.label_column
  names = set()
  for split, chunks in chunks_by_split.items():
    for chunk in chunks:
      if lc not in chunk.columns or not in_train(split, chunk.key):
        continue
      names.update(t for t in _class_texts(chunk, lc, config.order_column)
                   if t is not None)
  return {n: i for i, n in enumerate(transform_module.class_order(
      sorted(names)))}


def apply_vocabulary(config: pipeline_config.PipelineConfig,
                            chunks: List[seqlib.RowChunk],
                            vocabulary: Dict[str, int]) -> None:
  """Replaces each chunk's class labels by their indices, as Transform will;
  a class the training rows lack is an error naming the row."""
  lc, oc = config.label_column, config.order_column
  for chunk in chunks:
    if lc not in chunk.columns:
      continue
    texts = _class_texts(chunk, lc, oc)
    out = np.zeros(len(texts), np.int64)
    for i, text in enumerate(texts):
      if text is None:
        continue
      if text not in vocabulary:
        raise InputDataError(
            f'{chunk.source}: sequence {chunk.key!r}{_row(chunk, oc, i)}: the '
            f'label {lc!r} is {text!r}, a class the training split does not '
            f'have (it has {sorted(vocabulary, key=vocabulary.get)[:20]})')
      out[i] = vocabulary[text]
    chunk.columns[lc] = out
