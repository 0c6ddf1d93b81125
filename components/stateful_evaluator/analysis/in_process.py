"""TFMA over the stateful extracts in this process, without a Beam pipeline.

The same computation as ``beam_run.run``, for extracts small enough to read
in one process: TFMA's own extractor functions, metric computations,
combiners, derived and diff metrics, validator and proto converters, called
in a loop instead of as a 36-stage Beam pipeline. Beam's fixed cost
(building, translating and running that pipeline: seconds, whatever the
data) is what the evaluator would otherwise spend most of its time on
(BENCHMARKS section 5). The files written are the ones TFMA's writers write
(``metrics``, ``plots``, ``attributions`` and ``validations`` TFRecords of
the same protos, ``eval_config.json``), so ``tfma.load_eval_result``,
``tfma.load_validation_result`` and ``results`` read them unchanged.

The extracts are read in record batches (TFXIO's in-process reader, or
``Streaming``: the records as the chunked pass writes them, decoded the
same way in a thread of its own) and folded into one accumulator per slice
as they come, so memory does not grow with the number of extracts. The
per-class calibration histograms (AUC, top-1 precision and recall of a
multi-class model: TFMA builds them one example and class at a time in
Python) are binned in NumPy instead (``histograms.py``), with the
same values in the same order. What TFMA computes only on Beam (confidence
intervals, query-key metrics, cross-slice metrics) is refused by
``unsupported``; the caller then runs ``beam_run.run``. Every TFMA name
below its public API that this path calls is taken from ``tfma_internals``.
"""

from __future__ import annotations

import copy
import os
import queue
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis import constants
from tensorflow_model_analysis.metrics import metric_types
from tfx_bsl.coders import example_coder
from tfx_bsl.public import tfxio
from tfx_bsl.tfxio import dataset_options
from tfx_bsl.tfxio import record_based_tfxio

from components.stateful_evaluator.analysis import histograms
from components.stateful_evaluator.analysis import tfma_internals as internals

# Record batches read at a time (TFXIO's in-process reader).
BATCH_SIZE = 256

# The files, as TFMA's default writers name them.
_SHARDED = '-00000-of-00001.tfrecord'
_PRUNED = (constants.SLICE_KEY_TYPES_KEY, constants.SLICE_KEYS_KEY)

Sliced = Tuple[Any, Dict[Any, Any]]

# What TFMA's FilterOutSlices puts in place of a slice under min_slice_size.
_ERROR_KEY = '__ERROR__'
_SMALL_SLICE = ('Example count for this slice key is lower than the minimum '
                'required value: %d. No data is aggregated for this slice.')


def unsupported(config: tfma.EvalConfig) -> Optional[str]:
  """Why ``config`` needs TFMA's Beam pipeline, or None."""
  if config.options.compute_confidence_intervals.value:
    return 'confidence intervals'
  if any(spec.query_key for spec in config.metrics_specs):
    return 'query-key metrics'
  if config.cross_slicing_specs:
    return 'cross-slicing specs'
  return None


def _record_batches(extracts_path: str) -> Iterator[Any]:
  source = tfxio.TFExampleRecord(
      file_pattern=extracts_path,
      raw_record_column_name=tfma.ARROW_INPUT_COLUMN)
  return source.RecordBatches(dataset_options.RecordBatchesOptions(
      batch_size=BATCH_SIZE, shuffle=False, num_epochs=1))


def _extracts(record_batch: Any, config: tfma.EvalConfig
             ) -> List[Dict[str, Any]]:
  """One extract per example: what TFMA's Features, Labels, ExampleWeights,
  MaterializedPredictions and Unbatch extractors make of a record batch."""
  batch, serialized = (
      internals.drop_unsupported_columns_and_fetch_raw_data_column(
          record_batch))
  batched = {constants.FEATURES_KEY: internals.record_batch_to_tensor_values(
                 batch, {}),
             constants.INPUT_KEY: serialized}
  specs = list(config.model_specs)
  batched[constants.LABELS_KEY] = (
      internals.get_feature_values_for_model_spec_field(
          specs, 'label_key', 'label_keys', batched, True))
  weights = internals.get_feature_values_for_model_spec_field(
      specs, 'example_weight_key', 'example_weight_keys', batched)
  if weights is not None:
    batched[constants.EXAMPLE_WEIGHTS_KEY] = weights
  predictions = internals.get_feature_values_for_model_spec_field(
      specs, 'prediction_key', 'prediction_keys', batched)
  if predictions is not None:
    batched = internals.copy_and_set_by_keys(
        batched, [constants.PREDICTIONS_KEY], predictions)
  return internals.extract_unbatched_inputs(batched)


class _SlicedMetrics:
  """TFMA's ``_ComputeMetricsAndPlots`` without Beam: the metric
  computations of ``config``, one accumulator per slice."""

  def __init__(self, config: tfma.EvalConfig):
    self._config = config
    separated = internals.filter_and_separate_computations(
        internals.to_computations(list(config.metrics_specs),
                                     eval_config=config))
    self._derived = separated.derived_computations
    self._ci_derived = separated.ci_derived_computations
    computations = histograms.vectorise(
        separated.non_derived_computations, config)
    self._preprocess = internals.PreprocessorDoFn(computations)
    self._combine = internals.ComputationsCombineFn(computations)
    self._slice_keys = internals.ExtractSliceKeysFn(
        config, materialize=False)
    self._slice_specs = [internals.SingleSliceSpec(spec=spec)
                         for spec in config.slicing_specs] or [
                             internals.SingleSliceSpec()]
    self._fanout = internals.FanoutSlicesDoFn(
        lambda k: k not in _PRUNED)
    baseline = internals.get_baseline_model_spec(config)
    self._baseline = baseline.name if baseline else None
    self._accumulators: Dict[Any, Any] = {}
    self._counts: Dict[Any, int] = {}
    self.examples = 0
    self._preprocess.setup()
    self._preprocess.start_bundle()
    self._combine.setup()

  def add(self, extract: Dict[str, Any]) -> None:
    self.examples += 1
    for keyed in self._slice_keys.process(extract, self._slice_specs):
      for element in self._preprocess.process(keyed):
        for slice_key, inputs in self._fanout.process(element):
          accumulator = self._accumulators.get(slice_key)
          if accumulator is None:
            accumulator = self._combine.create_accumulator()
          self._accumulators[slice_key] = self._combine.add_input(
              accumulator, inputs)
          self._counts[slice_key] = self._counts.get(slice_key, 0) + 1

  def results(self) -> List[Sliced]:
    """(slice key, metrics, plots and attributions), as TFMA's evaluator
    hands them to its writers."""
    self._preprocess.finish_bundle()
    self._preprocess.teardown()
    min_size = self._config.options.min_slice_size.value
    out = []
    for slice_key, accumulator in self._accumulators.items():
      if min_size > 1 and slice_key and self._counts[slice_key] < min_size:
        # TFMA's FilterOutSlices: the slice stays, with an error instead.
        out.append((slice_key, {_ERROR_KEY: _SMALL_SLICE % min_size}))
        continue
      metrics = self._combine.extract_output(
          self._combine.compact(accumulator))
      for computation in self._derived:
        metrics.update(computation.result(metrics))
      metrics.update(self._diffs(metrics))
      for computation in self._ci_derived:
        metrics.update(computation.result(metrics))
      out.append((slice_key, {k: v for k, v in metrics.items()
                              if not internals.is_private_metrics(k)}))
    self._combine.teardown()
    return out

  def _diffs(self, metrics: Dict[Any, Any]) -> Dict[Any, Any]:
    """The candidate-minus-baseline metrics of TFMA's AddDiffMetrics."""
    if not self._baseline:
      return {}
    diffs = {}
    for key, value in metrics.items():
      if internals.is_private_metrics(key) or key.is_diff:
        continue
      base = key.make_baseline_key(self._baseline)
      if key.model_name != self._baseline and base in metrics and (
          internals.is_metric_diffable(value)):
        diffs[key.make_diff_key()] = value - metrics[base]
    return diffs


def _by_type(sliced: List[Sliced], key_type: type) -> List[Sliced]:
  return [internals.filter_by_key_type(item, key_type) for item in sliced]


def _write_records(path: str, records: List[Any]) -> None:
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record.SerializeToString())


def _check(config: tfma.EvalConfig) -> None:
  reason = unsupported(config)
  if reason:
    raise ValueError(f'TFMA in process cannot compute {reason}; run it on '
                     f'Beam (beam_run.run)')


def run(extracts_path: str, config: tfma.EvalConfig, output_dir: str
       ) -> int:
  """Runs TFMA over the extracts in this process; writes the files of
  ``beam_run.run``. Returns the number of examples read."""
  _check(config)
  sliced = _SlicedMetrics(config)
  for record_batch in _record_batches(extracts_path):
    for extract in _extracts(record_batch, config):
      sliced.add(extract)
  _write_outputs(sliced, config, extracts_path, output_dir)
  return sliced.examples


class Streaming:
  """TFMA in process fed the serialized extracts as they are written
  (``put``, from the chunked pass's ``on_record``): a thread of its own
  decodes them in record batches of ``BATCH_SIZE``, as TFXIO's reader
  does, and folds them into the per-slice accumulators, so the metrics are
  computed beside the pass rather than after it; ``write`` then writes the
  files of ``run``. Past ``max_examples`` it stops and drops what it holds
  (``overflowed``): the caller runs TFMA on Beam instead. The queue between
  the two is bounded, so memory stays flat."""

  def __init__(self, config: tfma.EvalConfig, max_examples: int):
    _check(config)
    self._config = config
    self._max = int(max_examples)
    self._pending: List[bytes] = []
    self._queue: queue.Queue = queue.Queue(maxsize=8)
    self._error: Optional[BaseException] = None
    self._sliced: Optional[_SlicedMetrics] = _SlicedMetrics(config)
    self.overflowed = False
    self.received = 0
    self._thread = threading.Thread(target=self._consume,
                                    name='tfma-in-process', daemon=True)
    self._thread.start()

  def put(self, record: bytes) -> None:
    self.received += 1
    if self.overflowed:
      return
    if self.received > self._max:
      self.overflowed = True
      self._pending = []
      self._queue.put(None)  # The consumer stops; its state is dropped.
      return
    self._pending.append(record)
    if len(self._pending) >= BATCH_SIZE:
      self._queue.put(self._pending)
      self._pending = []

  def _consume(self) -> None:
    decoder = example_coder.ExamplesToRecordBatchDecoder()
    try:
      while True:
        records = self._queue.get()
        if records is None:
          return
        if self._error is not None or self.overflowed:
          continue
        batch = record_based_tfxio.AppendRawRecordColumn(
            decoder.DecodeBatch(records), tfma.ARROW_INPUT_COLUMN, records)
        for extract in _extracts(batch, self._config):
          self._sliced.add(extract)
    except BaseException as e:  # pylint: disable=broad-except
      self._error = e
      while self._queue.get() is not None:  # Unblock the producer.
        pass

  def close(self) -> None:
    """Waits until every record put so far is accounted for."""
    if not self.overflowed:
      if self._pending:
        self._queue.put(self._pending)
        self._pending = []
      self._queue.put(None)
    self._thread.join()
    if self.overflowed:
      self._sliced = None
    if self._error is not None:
      raise self._error

  def abandon(self) -> None:
    """Stops the thread, ignoring its errors (the caller has its own)."""
    try:
      self.close()
    except BaseException:  # pylint: disable=broad-except
      pass
    self._sliced = None

  def write(self, extracts_path: str, output_dir: str) -> int:
    """After ``close``: writes TFMA's files; returns the examples."""
    if self._sliced is None:
      raise ValueError('TFMA in process overflowed: run it on Beam')
    _write_outputs(self._sliced, self._config, extracts_path, output_dir)
    return self._sliced.examples


def _write_outputs(sliced: _SlicedMetrics, config: tfma.EvalConfig,
                   extracts_path: str, output_dir: str) -> None:
  results = sliced.results()
  metrics = _by_type(results, metric_types.MetricKey)
  plots = _by_type(results, metric_types.PlotKey)
  attributions = _by_type(results, metric_types.AttributionsKey)
  combine = internals.CombineValidations(config)
  validation = combine.create_accumulator()
  for item in metrics:
    validation = combine.add_input(
        validation, internals.validate_metrics(item, config))
  validation = combine.extract_output(validation)

  tf.io.gfile.makedirs(output_dir)
  join = os.path.join
  _write_records(join(output_dir, constants.METRICS_KEY + _SHARDED), [
      internals.convert_slice_metrics_to_proto(item, [])
      for item in metrics])
  _write_records(join(output_dir, constants.PLOTS_KEY + _SHARDED), [
      internals.convert_slice_plots_to_proto(item, []) for item in plots])
  _write_records(join(output_dir, constants.ATTRIBUTIONS_KEY + _SHARDED), [
      internals.convert_slice_attributions_to_proto(item)
      for item in attributions])
  _write_records(join(output_dir, constants.VALIDATIONS_KEY + '.tfrecord'),
                 [validation])
  if internals.EVAL_CONFIG_FILE not in (
      config.options.disabled_outputs.values):
    with tf.io.gfile.GFile(join(
        output_dir, internals.EVAL_CONFIG_FILE + '.json'), 'w') as f:
      f.write(internals.serialize_eval_run(
          copy.deepcopy(config), extracts_path, 'tfrecords',
          {'': '<unknown>'}) + '\n')
