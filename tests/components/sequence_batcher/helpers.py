"""Fixtures and invariant checks shared by the SequenceBatcher tests.

Test data is built so that every real time step is recognisable: feature
``x0`` of step ``j`` of sequence ``i`` is ``1000 * i + j``, so a step that is
lost, duplicated, misplaced or reordered shows up as a wrong value.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
import re
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from components.sequence_batcher.command_line import exception_chain
from components.sequence_batcher import layout
from components.sequence_batcher import metadata as metadata_lib
from components.sequence_batcher import segments as segments_lib
from components.sequence_batcher import statistics

B = 3  # batch_size of the boundary table
T = 4  # num_unroll of the boundary table
FEATURES = ('x0', 'x1')

# name -> sequence lengths, for B = 3 and T = 4.
BOUNDARY_CASES = {
    'exactly_B': [5, 7, 2],
    'B_plus_1': [5, 7, 2, 9],
    'one_far_longer': [2, 3, 1, 2, 41],
    'length_T': [T, T],
    'length_T_plus_1': [T + 1, T + 1, T + 1, T + 1],
    'single_step': [1],
}


@dataclasses.dataclass
class SeqData:
  """One input sequence, in time order.

  Attributes:
    key: the sequence key.
    order: int64[L], strictly increasing values of the order column ``t``.
    features: float32[L, 2], columns ``x0``, ``x1``.
    labels: int64[L] (per_sequence: constant) or float32[L] (per_step).
  """
  key: str
  order: np.ndarray
  features: np.ndarray
  labels: np.ndarray

  @property
  def length(self) -> int:
    return int(self.order.shape[0])


def make_data(lengths: Sequence[int], label_kind: str,
              seed: int = 0) -> List[SeqData]:
  """Sequences of the given lengths; keys ``s00``, ``s01``, ..."""
  rng = np.random.default_rng(seed)
  data = []
  for i, n in enumerate(lengths):
    order = np.cumsum(rng.integers(1, 4, size=n)).astype(np.int64) + 100
    x0 = 1000.0 * i + np.arange(n)
    x1 = np.round(rng.normal(size=n), 3)
    feats = np.stack([x0, x1], axis=1).astype(np.float32)
    if label_kind == layout.PER_SEQUENCE:
      labels = np.full(n, i % 3, np.int64)
    else:
      labels = (0.5 * np.arange(n) + i).astype(np.float32)
    data.append(SeqData(f's{i:02d}', order, feats, labels))
  return data


def rows_of(data: Iterable[SeqData], seed: int = 1) -> List[dict]:
  """One dict per time step, shuffled (the input has no defined row order)."""
  rows = []
  for s in data:
    for j in range(s.length):
      rows.append({'seq_id': s.key, 't': int(s.order[j]),
                   'x0': float(s.features[j, 0]), 'x1': float(s.features[j, 1]),
                   'label': s.labels[j].item()})
  perm = np.random.default_rng(seed).permutation(len(rows))
  return [rows[i] for i in perm]


def _feature(value):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if value is None:
    return None
  if isinstance(value, (bytes, str)):
    value = value.encode('utf-8') if isinstance(value, str) else value
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
  if isinstance(value, (bool, int, np.integer)):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
  return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))


def example(row: dict) -> bytes:
  """One row dict -> serialized tf.Example (None values are left out)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  feats = {k: _feature(v) for k, v in row.items() if v is not None}
  return tf.train.Example(features=tf.train.Features(
      feature=feats)).SerializeToString()


def examples(rows: Iterable[dict]) -> List[bytes]:
  return [example(r) for r in rows]


def sequence_example(s: SeqData, label_kind: str,
                     reverse_steps: bool = False) -> bytes:
  """A whole sequence as a tf.SequenceExample.

  The key (and a per-sequence label) sit in the context; ``t``, ``x0``,
  ``x1`` (and a per-step label) are feature lists. ``reverse_steps`` stores
  the steps backwards, so only the ``t`` list gives their order.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  idx = np.arange(s.length)[::-1] if reverse_steps else np.arange(s.length)
  ctx = {'seq_id': _feature(s.key)}
  lists = {
      't': [_feature(int(s.order[j])) for j in idx],
      'x0': [_feature(float(s.features[j, 0])) for j in idx],
      'x1': [_feature(float(s.features[j, 1])) for j in idx],
  }
  if label_kind == layout.PER_SEQUENCE:
    ctx['label'] = _feature(int(s.labels[0]))
  else:
    lists['label'] = [_feature(float(s.labels[j])) for j in idx]
  return tf.train.SequenceExample(
      context=tf.train.Features(feature=ctx),
      feature_lists=tf.train.FeatureLists(feature_list={
          name: tf.train.FeatureList(feature=feats)
          for name, feats in lists.items()
      })).SerializeToString()


def write_csv(rows: Sequence[dict], path: str,
              header: Sequence[str] = ('seq_id', 't', 'x0', 'x1', 'label')
             ) -> str:
  """Writes rows as CSV; floats are written so they read back exactly."""
  with open(path, 'w', newline='') as f:
    f.write(','.join(header) + '\n')
    for line in csv_lines(rows, header):
      f.write(line + '\n')
  return path


def sequence_arrays(data: Iterable[SeqData]) -> List[layout.SequenceArrays]:
  return [layout.SequenceArrays(key=s.key, features=s.features,
                                labels=s.labels) for s in data]


def reference(data: Sequence[SeqData], config: layout.LayoutConfig):
  """``(plan, batches)`` of the NumPy reference layout."""
  return segments_lib.layout_in_memory(sequence_arrays(data), config)


def read_split(path: str, split: Optional[str] = None,
               **kwargs) -> List[Dict[str, np.ndarray]]:
  """Every batch of a written split, as NumPy dicts, in reader order."""
  from components.sequence_batcher import read_batches  # pylint: disable=g-import-not-at-top
  return list(read_batches(path, split, **kwargs).as_numpy_iterator())


def check_layout(batches: Sequence[Dict[str, np.ndarray]],
                 data: Sequence[SeqData],
                 config: layout.LayoutConfig) -> None:
  """Asserts every invariant of the lane layout on a list of batches.

  * every input time step appears exactly once, with its own feature and
    label values, in time order (``sum(mask)`` == input rows);
  * segments of each sequence sit in consecutive batches of one lane, in
    order (``segment_index`` 0, 1, 2, ...);
  * ``reset`` is 1 exactly on first segments (0 on later segments and on
    padding lanes);
  * ``label_weight``: per_sequence: 1 only on the last real step; per_step:
    equal to the mask;
  * padding lanes: mask 0, segment_index -1, key b'', no data.

  ``dense`` batches: see ``check_dense_layout``.
  """
  if config.mode == layout.DENSE:
    check_dense_layout(batches, data, config)
    return
  bsz, unroll = config.batch_size, config.num_unroll
  by_key = {s.key: s for s in data}
  assert len(by_key) == len(data)
  placed = collections.defaultdict(list)  # key -> [(segment, batch, lane)]
  total_mask = 0.0
  for b, batch in enumerate(batches):
    assert batch['features'].shape == (bsz, unroll, len(FEATURES))
    assert batch['mask'].shape == (bsz, unroll)
    assert batch['reset'].shape == (bsz,)
    assert int(np.ravel(batch['batch_index'])[0]) == b
    total_mask += float(batch['mask'].sum())
    for lane in range(bsz):
      seg = int(batch['segment_index'][lane])
      key = batch['key'][lane]
      mask = batch['mask'][lane]
      where = f'batch {b} lane {lane}'
      if seg < 0:
        assert seg == -1, where
        assert key == b'', where
        assert not mask.any(), where
        assert int(batch['reset'][lane]) == 0, where
        assert int(batch['sequence_length'][lane]) == 0, where
        assert not batch['label_weight'][lane].any(), where
        assert not batch['features'][lane].any(), where
        assert not batch['labels'][lane].any(), where
        continue
      key = key.decode('utf-8')
      assert key in by_key, f'{where}: unknown key {key!r}'
      s = by_key[key]
      placed[key].append((seg, b, lane))
      assert int(batch['reset'][lane]) == int(seg == 0), where
      assert int(batch['sequence_length'][lane]) == s.length, where
      lo = seg * unroll
      n = min(unroll, s.length - lo)
      assert n >= 1, f'{where}: segment {seg} of {key!r} is past its end'
      np.testing.assert_array_equal(
          mask, np.r_[np.ones(n), np.zeros(unroll - n)].astype(np.float32),
          err_msg=where)
      np.testing.assert_array_equal(batch['features'][lane, :n],
                                    s.features[lo:lo + n], err_msg=where)
      assert not batch['features'][lane, n:].any(), where
      np.testing.assert_allclose(batch['labels'][lane, :n],
                                 s.labels[lo:lo + n], rtol=0, atol=0,
                                 err_msg=where)
      assert not batch['labels'][lane, n:].any(), where
      if config.label_kind == layout.PER_STEP:
        np.testing.assert_array_equal(batch['label_weight'][lane], mask,
                                      err_msg=where)
      else:
        expect = np.zeros(unroll, np.float32)
        if lo + n == s.length:  # The last segment: weight on the last step.
          expect[n - 1] = 1.0
        np.testing.assert_array_equal(batch['label_weight'][lane], expect,
                                      err_msg=where)
  assert total_mask == sum(s.length for s in data)
  assert sorted(placed) == sorted(by_key), 'some sequence is missing'
  for key, segs in placed.items():
    nseg = -(-by_key[key].length // unroll)
    segs.sort()
    assert [k for k, _, _ in segs] == list(range(nseg)), key
    lanes = {lane for _, _, lane in segs}
    assert len(lanes) == 1, f'{key!r} changes lane: {segs}'
    first = segs[0][1]
    assert [b for _, b, _ in segs] == list(range(first, first + nseg)), (
        f'{key!r} is not in consecutive batches: {segs}')


def check_dense_layout(batches: Sequence[Dict[str, np.ndarray]],
                       data: Sequence[SeqData],
                       config: layout.LayoutConfig) -> None:
  """The invariants of a ``dense`` layout, where a lane is one stream of
  steps (step ``j`` of batch ``b`` is stream step ``b * T + j``):

  * every input time step appears exactly once, with its own feature and
    label values (``sum(mask)`` == input rows);
  * a sequence's steps are consecutive steps of one lane's stream, in order
    (``segment_index`` = the step's position 0, 1, 2, ...);
  * ``reset`` is 1 exactly on a sequence's first step, and a lane's stream
    changes sequence only at a reset: each sequence ends before the next
    one starts; padding (mask 0, key b'', segment_index -1, no data) only
    at the end of a lane;
  * ``key`` and ``sequence_length`` on every real step name its sequence;
  * ``label_weight``: per_sequence: 1 only on the last real step; per_step:
    equal to the mask.
  """
  bsz, unroll = config.batch_size, config.num_unroll
  by_key = {s.key: s for s in data}
  assert len(by_key) == len(data)
  for b, batch in enumerate(batches):
    assert batch['features'].shape == (bsz, unroll, len(FEATURES))
    for name in layout.LANE_KEYS:
      assert np.shape(batch[name]) == (bsz, unroll), (b, name)
    assert int(np.ravel(batch['batch_index'])[0]) == b
  seen = collections.Counter()
  for lane in range(bsz):
    stream = [(b, j) for b in range(len(batches)) for j in range(unroll)]
    current, padded = None, False  # (key, next position) of the open one.
    for b, j in stream:
      batch = batches[b]
      where = f'batch {b} lane {lane} step {j}'
      pos = int(batch['segment_index'][lane, j])
      key = batch['key'][lane, j]
      reset = int(batch['reset'][lane, j])
      if pos < 0:
        assert pos == -1 and key == b'', where
        assert batch['mask'][lane, j] == 0, where
        assert reset == 0 and batch['sequence_length'][lane, j] == 0, where
        assert batch['label_weight'][lane, j] == 0, where
        assert not batch['features'][lane, j].any(), where
        assert batch['labels'][lane, j] == 0, where
        if current is not None:
          assert current[1] == by_key[current[0]].length, (
              f'{where}: {current[0]!r} stops before its end')
        current, padded = None, True
        continue
      assert not padded, f'{where}: a real step after padding'
      key = key.decode('utf-8')
      assert key in by_key, f'{where}: unknown key {key!r}'
      s = by_key[key]
      assert reset == int(pos == 0), where
      if reset:
        if current is not None:
          assert current[1] == by_key[current[0]].length, (
              f'{where}: {key!r} starts before {current[0]!r} ends')
        current = (key, 0)
      assert current is not None and current == (key, pos), (
          f'{where}: {key!r} step {pos} out of order (open: {current})')
      current = (key, pos + 1)
      seen[key] += 1
      assert batch['mask'][lane, j] == 1.0, where
      assert int(batch['sequence_length'][lane, j]) == s.length, where
      np.testing.assert_array_equal(batch['features'][lane, j],
                                    s.features[pos], err_msg=where)
      assert batch['labels'][lane, j] == s.labels[pos], where
      want = (1.0 if config.label_kind == layout.PER_STEP or
              pos == s.length - 1 else 0.0)
      assert batch['label_weight'][lane, j] == want, where
    if current is not None:
      assert current[1] == by_key[current[0]].length, (
          f'lane {lane}: {current[0]!r} never ends')
  assert dict(seen) == {s.key: s.length for s in data}, 'steps lost or doubled'


def placements_of(batches: Sequence[Dict[str, np.ndarray]]) -> dict:
  """``{key: (lane, start)}`` as the batches show it (``start``: the first
  batch, or in ``dense`` batches the lane-stream step of the first step)."""
  out = {}
  for b, batch in enumerate(batches):
    seg = np.asarray(batch['segment_index'])
    if seg.ndim == 2:  # dense
      unroll = seg.shape[1]
      for lane, j in zip(*np.nonzero(seg == 0)):
        out[batch['key'][lane, j].decode('utf-8')] = (int(lane),
                                                      b * unroll + int(j))
      continue
    for lane in np.flatnonzero(seg == 0):
      out[batch['key'][lane].decode('utf-8')] = (int(lane), b)
  return out


def check_metadata(meta: dict, batches: Sequence[Dict[str, np.ndarray]],
                   data: Sequence[SeqData],
                   config: layout.LayoutConfig) -> None:
  """Asserts that ``metadata.json`` agrees with the batches in the files."""
  real = int(sum(float(b['mask'].sum()) for b in batches))
  total = len(batches) * config.batch_size * config.num_unroll
  assert meta['num_batches'] == len(batches)
  assert meta['num_sequences'] == len(data)
  assert meta['real_timesteps'] == real == sum(s.length for s in data)
  assert meta['padded_timesteps'] == total - real
  # JSON keeps a float exactly, and both sides are the same int / int.
  assert meta['efficiency'] == real / total
  assert meta['batch_size'] == config.batch_size
  assert meta['num_unroll'] == config.num_unroll
  assert meta['mode'] == config.mode
  assert meta['label_kind'] == config.label_kind
  assert meta['feature_names'] == list(FEATURES)
  assert meta['num_features'] == len(FEATURES)
  assert meta['max_length'] == max(s.length for s in data)
  assert meta['min_length'] == min(s.length for s in data)
  assert sum(meta['length_histogram']['counts']) == len(data)
  assert len(meta['files']) == meta['num_shards']
  if config.mode == layout.BUCKETED:
    groups = meta['groups']
    assert sum(span for _, span in groups) == len(batches)
  else:
    assert 'groups' not in meta


def assert_same_batches(actual: Sequence[Dict[str, np.ndarray]],
                        expected: Sequence[Dict[str, np.ndarray]]) -> None:
  """Batch-by-batch, key-by-key equality (values and dtypes)."""
  assert len(actual) == len(expected)
  for b, (got, want) in enumerate(zip(actual, expected)):
    assert sorted(got) == sorted(want) == sorted(layout.BATCH_KEYS)
    for name in layout.BATCH_KEYS:
      g, w = np.asarray(got[name]), np.asarray(want[name])
      if name == 'batch_index':
        g, w = g.ravel(), w.ravel()
      if name == 'key':
        g, w = g.astype(object), w.astype(object)
      else:
        assert g.dtype == w.dtype, (b, name, g.dtype, w.dtype)
      np.testing.assert_array_equal(g, w, err_msg=f'batch {b} {name}')


def assert_error(excinfo, error_type, *patterns: str) -> BaseException:
  """Finds ``error_type`` in the raised exception's cause chain and checks
  that its message matches every regex in ``patterns``.

  Errors raised inside a Beam pipeline may arrive wrapped by the runner.
  """
  chain = exception_chain(excinfo.value)
  found = [e for e in chain if isinstance(e, error_type)]
  assert found, (f'no {error_type.__name__} in the chain: '
                 f'{[type(e).__name__ for e in chain]}: {excinfo.value}')
  message = str(found[0])
  for pattern in patterns:
    assert re.search(pattern, message), (
        f'{pattern!r} not in the message: {message}')
  return found[0]


def list_files(directory: str) -> Dict[str, bytes]:
  """Every file under ``directory`` (relative name -> bytes)."""
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, directory)] = f.read()
  return out


# --- Running the Beam transform -----------------------------------------------

# Plan statistics the metadata PCollection must carry (compared with the
# NumPy reference's ``layout.split_statistics``).
PLAN_STATS = ('num_sequences', 'num_batches', 'num_shards', 'batches_per_shard',
              'real_timesteps', 'padded_timesteps', 'truncated_timesteps',
              'efficiency', 'length_histogram', 'min_length', 'median_length',
              'max_length', 'groups')


def expected_stats(plan: layout.LanePlan, truncated: int = 0) -> dict:
  stats = statistics.split_statistics(plan, truncated)
  return {k: stats[k] for k in PLAN_STATS if k in stats}


def metadata_matches(expected: dict, split_dir: str):
  """A Beam matcher: one metadata dict, whose entries include ``expected``,
  equal to the ``metadata.json`` written in ``split_dir``."""
  from apache_beam.testing.util import BeamAssertException  # pylint: disable=g-import-not-at-top

  def _match(actual):
    if len(actual) != 1:
      raise BeamAssertException(f'expected one metadata dict, got {actual}')
    got = actual[0]
    diff = {k: (got.get(k, '<absent>'), v) for k, v in expected.items()
            if got.get(k, '<absent>') != v}
    if diff:
      raise BeamAssertException(f'metadata differs (got, expected): {diff}')
    # The dict is emitted by the step that writes the file.
    on_disk = read_json(os.path.join(split_dir, 'metadata.json'))
    if got != on_disk:
      raise BeamAssertException(f'metadata PCollection {got} differs from '
                                f'metadata.json {on_disk}')
  return _match


def run_batcher(records, split_dir: str, config: layout.LayoutConfig, *,
                expected: Optional[dict] = None, options=None,
                input_format: str = 'tf_example', columns=None,
                split: str = 'train', csv_pattern: Optional[str] = None,
                **batcher_kwargs):
  """Runs ``BatchSequences`` in a ``TestPipeline``.

  ``records`` are ``beam.Create``d, or, with ``csv_pattern``, the CSV files
  are read with ``ReadFromTextWithFilename``. When ``expected`` is given, the
  metadata PCollection is asserted (inside the pipeline) to contain it.
  """
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.testing.test_pipeline import TestPipeline  # pylint: disable=g-import-not-at-top
  from apache_beam.testing.util import assert_that  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import beam as sb_beam  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import read_stage  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import sequences  # pylint: disable=g-import-not-at-top
  columns = columns or sequences.ColumnConfig()
  headers = None
  with TestPipeline(options=options) as p:
    if csv_pattern:
      input_format = 'csv'
      headers = read_stage.read_csv_headers(csv_pattern, columns)
      pcoll = p | 'Read' >> beam.io.ReadFromTextWithFilename(
          csv_pattern, skip_header_lines=1)
    else:
      pcoll = p | 'Create' >> beam.Create(list(records))
    meta = pcoll | 'Batch' >> sb_beam.BatchSequences(
        split_dir, split=split, input_format=input_format, columns=columns,
        config=config, csv_headers=headers, **batcher_kwargs)
    if expected is not None:
      assert_that(meta, metadata_matches(expected, split_dir))


def read_json(path: str) -> dict:
  import json  # pylint: disable=g-import-not-at-top
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def build_in_process(chunks, columns=None,
                     config: Optional[layout.LayoutConfig] = None):
  """What the pipeline does between decoding and planning, in one process:
  group the chunks by key, infer the feature names (or take the named ones)
  and build every sequence. Returns the ``SequenceArrays`` sorted by key."""
  from components.sequence_batcher import sequences  # pylint: disable=g-import-not-at-top
  columns = columns or sequences.ColumnConfig()
  config = config or layout.LayoutConfig()
  by_key = collections.defaultdict(list)
  for chunk in chunks:
    by_key[chunk.key].append(chunk)
  names = list(columns.feature_columns or columns.candidate_features(
      set().union(*(c.columns for c in chunks))))
  return [sequences.build_sequence(key, by_key[key], names, columns, config)
          for key in sorted(by_key)]


def csv_lines(rows: Sequence[dict],
              header: Sequence[str] = ('seq_id', 't', 'x0', 'x1', 'label')
             ) -> List[str]:
  """Data lines (no header); a None value is an empty field."""
  import io  # pylint: disable=g-import-not-at-top
  buf = io.StringIO()
  w = csv.writer(buf)
  for r in rows:
    w.writerow(['' if r.get(h) is None else
                (repr(r[h]) if isinstance(r[h], float) else r[h])
                for h in header])
  return buf.getvalue().splitlines()


def forget_label_statistics(root: str, splits: Sequence[str]) -> None:
  """Removes the recorded label statistics of ``splits`` from the batches
  at ``root``, as a batcher older than them wrote the metadata."""
  for split in splits:
    path = os.path.join(metadata_lib.split_dir(root, split),
                        metadata_lib.METADATA_FILE)
    with open(path, encoding='utf-8') as f:
      meta = json.load(f)
    del meta[statistics.LABELS_KEY]
    with open(path, 'w', encoding='utf-8') as f:
      f.write(metadata_lib.dumps(meta))
