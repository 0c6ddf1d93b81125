"""Every split ExampleGen wrote holds at least one example.

An empty split otherwise surfaces only later, as "No files found" in
StatisticsGen or Transform. ``ExampleSplitCheck`` runs right after ExampleGen
and stops the pipeline with one line naming the split, its folder and the
Beam runner that wrote it; it reads at most one record per split.
"""

import os
from typing import List, Sequence

from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.annotations import Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types import standard_artifacts


class EmptySplitError(ValueError):
  """An ExampleGen split holds no example."""


def _has_record(path: str) -> bool:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  compression = 'GZIP' if path.endswith('.gz') else ''
  for _ in tf.data.TFRecordDataset(path, compression_type=compression).take(1):
    return True
  return False


def empty_splits(examples_uri: str, splits: Sequence[str]) -> List[str]:
  """The names of the splits under ``examples_uri`` with no record in any of
  their files (``Split-<name>/*``; ``.gz`` files read as GZIP)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  empty = []
  for split in splits:
    files = sorted(tf.io.gfile.glob(
        os.path.join(examples_uri, f'Split-{split}', '*')))
    if not any(_has_record(f) for f in files):
      empty.append(split)
  return empty


def check_splits(examples_uri: str, splits: Sequence[str],
                 runner: str) -> None:
  """Raises ``EmptySplitError`` (one line) for the first empty split."""
  if not splits:
    raise EmptySplitError(f'ExampleGen wrote no splits in {examples_uri} '
                          f'(Beam runner: {runner})')
  empty = empty_splits(examples_uri, splits)
  if empty:
    split = empty[0]
    others = f' (also empty: {", ".join(empty[1:])})' if empty[1:] else ''
    raise EmptySplitError(
        f'ExampleGen split {split!r} is empty: no example in '
        f'{os.path.join(examples_uri, "Split-" + split)}{others} (Beam '
        f'runner: {runner}); every split needs at least one example')


@component
def ExampleSplitCheck(  # pylint: disable=invalid-name
    examples: InputArtifact[standard_artifacts.Examples],
    runner: Parameter[str]) -> None:
  """Fails (``EmptySplitError``) when a split of ``examples`` is empty."""
  splits = artifact_utils.decode_split_names(examples.split_names)
  check_splits(examples.uri, splits, runner)


def _parents(node) -> list:
  """The nodes whose outputs ``node`` reads, and its explicit upstream nodes
  (TFX fills ``upstream_nodes`` from the channels only when the pipeline is
  built)."""
  out = list(node.upstream_nodes)
  for ch in getattr(node, 'inputs', {}).values():
    producer = getattr(ch, 'producer_component', None)
    if producer is not None:
      out.append(producer)
  return out


def _upstream(node) -> set:
  """The ids of every node ``node`` depends on, directly or not."""
  seen, todo = set(), _parents(node)
  while todo:
    n = todo.pop()
    if id(n) not in seen:
      seen.add(id(n))
      todo.extend(_parents(n))
  return seen


def add_split_check(components: list, example_gen, runner: str):
  """Inserts an ``ExampleSplitCheck`` of ``example_gen``'s examples after it
  in ``components`` and makes the components that read those examples wait
  for it (only those that do not already wait for another reader, e.g.
  StatisticsGen but not Transform, which follows it through SchemaGen).
  Returns the check component."""
  examples = example_gen.outputs['examples']
  check = ExampleSplitCheck(examples=examples, runner=runner)
  readers = [c for c in components if c is not example_gen and any(
      ch is examples for ch in getattr(c, 'inputs', {}).values())]
  reader_ids = {id(r) for r in readers}
  for reader in readers:
    if not _upstream(reader) & (reader_ids - {id(reader)}):
      reader.add_upstream_node(check)
  components.insert(components.index(example_gen) + 1, check)
  return check
