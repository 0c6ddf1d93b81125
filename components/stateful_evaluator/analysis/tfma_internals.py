"""The TFMA internals the in-process path relies on, named in one place.

``in_process.py`` runs TFMA's own extractor functions, metric computations,
combiners, validator and writers' proto converters in a loop instead of a
Beam pipeline, and ``histograms.py`` swaps TFMA's per-class calibration
histogram combiner for a NumPy one. Both reach below TFMA's public API
(``tfma.*``): into private (underscore) functions and classes, into private
attributes of a combiner, and into public functions of TFMA's inner modules
that its documentation does not promise. Every such name is taken here,
once, with what it is used for; the other files use only these names.

A TFMA upgrade that moves or renames one fails when this module is imported
(``ImportError`` naming it) and in ``tests/components/stateful_evaluator/
test_tfma_internals.py``, which also checks the kind and the parameters used
of each. The Beam path (``beam_run.py``) uses TFMA's public transforms only.
Pinned to TensorFlow Model Analysis 0.47 (TFX 1.16).
"""

from __future__ import annotations

import types
from typing import Any, List, NamedTuple

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.evaluators import (
    metrics_plots_and_validations_evaluator as _mpv_evaluator)
from tensorflow_model_analysis.evaluators import (
    metrics_validator as _validator)
from tensorflow_model_analysis.extractors import (
    features_extractor as _features)
from tensorflow_model_analysis.extractors import (
    slice_key_extractor as _slice_keys)
from tensorflow_model_analysis.extractors import unbatch_extractor as _unbatch
from tensorflow_model_analysis.metrics import (
    calibration_histogram as _calibration)
from tensorflow_model_analysis.metrics import metric_specs as _metric_specs
from tensorflow_model_analysis.metrics import metric_util as _metric_util
from tensorflow_model_analysis.slicer import slicer_lib as _slicer
from tensorflow_model_analysis.utils import model_util as _model_util
from tensorflow_model_analysis.utils import util as _util
from tensorflow_model_analysis.writers import (
    eval_config_writer as _config_writer)
from tensorflow_model_analysis.writers import (
    metrics_plots_and_validations_writer as _mpv_writer)


def _internal(module: types.ModuleType, name: str) -> Any:
  """``module.name``, or an ImportError that names it."""
  try:
    return getattr(module, name)
  except AttributeError:
    raise ImportError(
        f'TensorFlow Model Analysis {tfma.__version__} has no '
        f'{module.__name__}.{name}, which the StatefulEvaluator\'s in-process '
        'TFMA uses (components/stateful_evaluator/analysis/'
        'tfma_internals.py)') from None


# --- Private names (underscore) --------------------------------------------

# Extraction (in_process._extracts): a record batch -> its features without
# the raw-record column, and that column (FeaturesExtractor's first step).
drop_unsupported_columns_and_fetch_raw_data_column = _internal(
    _features, '_drop_unsupported_columns_and_fetch_raw_data_column')
# A batched extract -> one extract per example (UnbatchExtractor's body).
extract_unbatched_inputs = _internal(_unbatch, '_extract_unbatched_inputs')

# Metrics (in_process._SlicedMetrics), as TFMA's _ComputeMetricsAndPlots:
# the computations split into non-derived / derived / CI-derived ones,
filter_and_separate_computations = _internal(
    _mpv_evaluator, '_filter_and_separate_computations')
# the DoFn that runs the computations' preprocessors on an extract,
PreprocessorDoFn = _internal(_mpv_evaluator, '_PreprocessorDoFn')
# the CombineFn of all the non-derived computations' combiners,
ComputationsCombineFn = _internal(_mpv_evaluator, '_ComputationsCombineFn')
# the DoFn that fans an extract out to its slice keys,
FanoutSlicesDoFn = _internal(_slicer, '_FanoutSlicesDoFn')
# metrics named '_...' that TFMA drops from its output,
is_private_metrics = _internal(_mpv_evaluator, '_is_private_metrics')
# which metric values get a candidate-minus-baseline diff (AddDiffMetrics),
is_metric_diffable = _internal(_mpv_evaluator, '_is_metric_diffable')
# and one slice's metrics, plots or attributions split by key type.
filter_by_key_type = _internal(_mpv_evaluator, '_filter_by_key_type')

# Writing (in_process._write_outputs): the eval_config.json text.
serialize_eval_run = _internal(_config_writer, '_serialize_eval_run')

# Histograms (histograms.FastHistogram): the combiner of the per-class
# calibration histogram that FastHistogram replaces.
CalibrationHistogramCombiner = _internal(_calibration,
                                         '_CalibrationHistogramCombiner')


class CalibrationSettings(NamedTuple):
  """What a ``CalibrationHistogramCombiner`` was built with (its private
  attributes ``_key``, ``_aggregation_type``, ``_class_weights``,
  ``_num_buckets``, ``_left``, ``_range``, ``_prediction_based_bucketing``,
  ``_fractional_labels``): whether FastHistogram may replace it, and its
  buckets."""
  key: Any
  aggregation_type: Any
  class_weights: Any
  num_buckets: int
  left: float
  range: float
  prediction_based_bucketing: bool
  fractional_labels: bool


def calibration_settings(combiner: Any) -> CalibrationSettings:
  """The settings of a ``CalibrationHistogramCombiner``."""
  # pylint: disable=protected-access
  c = combiner
  return CalibrationSettings(
      key=c._key, aggregation_type=c._aggregation_type,
      class_weights=c._class_weights, num_buckets=c._num_buckets,
      left=c._left, range=c._range,
      prediction_based_bucketing=c._prediction_based_bucketing,
      fractional_labels=c._fractional_labels)
  # pylint: enable=protected-access


def combiners_of(combine_fn: Any) -> List[Any]:
  """The combiners inside a ``ComputationsCombineFn`` (Beam's
  ``SingleInputTupleCombineFn._combiners``; tests look at them)."""
  return list(combine_fn._combiners)  # pylint: disable=protected-access


# --- Public names of TFMA's inner modules (not in ``tfma.*``) ---------------

# Extraction (in_process._extracts): the features as tensor values,
record_batch_to_tensor_values = _internal(_util,
                                          'record_batch_to_tensor_values')
# a copy of an extract with one key set,
copy_and_set_by_keys = _internal(_util, 'copy_and_set_by_keys')
# and the labels / weights / predictions of the model specs' feature keys.
get_feature_values_for_model_spec_field = _internal(
    _model_util, 'get_feature_values_for_model_spec_field')

# Metrics (in_process._SlicedMetrics): the config's metric computations,
to_computations = _internal(_metric_specs, 'to_computations')
# the DoFn that adds an extract's slice keys,
ExtractSliceKeysFn = _internal(_slice_keys, 'ExtractSliceKeysFn')
# a slicing spec as the slicer matches it,
SingleSliceSpec = _internal(_slicer, 'SingleSliceSpec')
# and the baseline model's spec (for the diff metrics).
get_baseline_model_spec = _internal(_model_util, 'get_baseline_model_spec')

# Validation and writing (in_process._write_outputs): one slice's metrics
# checked against the config's thresholds,
validate_metrics = _internal(_validator, 'validate_metrics')
# the slices' validation results combined into one,
CombineValidations = _internal(_mpv_writer, 'CombineValidations')
# the protos TFMA's writers write,
convert_slice_metrics_to_proto = _internal(_mpv_writer,
                                           'convert_slice_metrics_to_proto')
convert_slice_plots_to_proto = _internal(_mpv_writer,
                                         'convert_slice_plots_to_proto')
convert_slice_attributions_to_proto = _internal(
    _mpv_writer, 'convert_slice_attributions_to_proto')
# and the name of the eval config file.
EVAL_CONFIG_FILE: str = _internal(_config_writer, 'EVAL_CONFIG_FILE')

# Histograms (histograms.Inputs and FastHistogram): a value by key path,
get_by_keys = _internal(_util, 'get_by_keys')
# labels and predictions as TFMA's metrics prepare them,
prepare_labels_and_predictions = _internal(_metric_util,
                                           'prepare_labels_and_predictions')
# and one histogram bucket, as the calibration histogram outputs it.
CalibrationBucket = _internal(_calibration, 'Bucket')
