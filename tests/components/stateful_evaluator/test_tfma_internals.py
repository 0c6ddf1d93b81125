"""The TFMA internals the in-process path relies on are still there, of the
kind and with the parameters it uses (``analysis/tfma_internals.py``): a
TFMA upgrade that moves, renames or reshapes one fails here, by name. And
no other file of the evaluator reaches below TFMA's public API itself."""

from __future__ import annotations

import glob
import inspect
import os
import re

import pytest
import tensorflow_model_analysis as tfma

from components.stateful_evaluator.analysis import tfma_internals as I

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
PACKAGE = os.path.join(ROOT, 'components', 'stateful_evaluator')

# name in tfma_internals -> (kind, the leading parameters the evaluator
# passes, in order; for a class, those of its constructor).
FUNCTION, CLASS, CONSTANT = 'function', 'class', 'constant'
EXPECTED = {
    # Private (underscore) names.
    'drop_unsupported_columns_and_fetch_raw_data_column': (
        FUNCTION, ['record_batch']),
    'extract_unbatched_inputs': (FUNCTION, ['mixed_legacy_batched_extract']),
    'filter_and_separate_computations': (FUNCTION, ['computations']),
    'PreprocessorDoFn': (CLASS, ['computations']),
    'ComputationsCombineFn': (CLASS, ['computations']),
    'FanoutSlicesDoFn': (CLASS, ['key_filter_fn']),
    'is_private_metrics': (FUNCTION, ['metric_key']),
    'is_metric_diffable': (FUNCTION, ['metric_value']),
    'filter_by_key_type': (
        FUNCTION, ['sliced_metrics_plots_attributions', 'key_type']),
    'serialize_eval_run': (
        FUNCTION, ['eval_config', 'data_location', 'file_format',
                   'model_locations']),
    'CalibrationHistogramCombiner': (
        CLASS, ['key', 'eval_config', 'aggregation_type', 'class_weights',
                'example_weighted', 'num_buckets', 'left', 'right',
                'prediction_based_bucketing', 'fractional_labels']),
    # Public names of TFMA's inner modules.
    'record_batch_to_tensor_values': (
        FUNCTION, ['record_batch', 'tensor_representations']),
    'copy_and_set_by_keys': (FUNCTION, ['root', 'keypath', 'value']),
    'get_feature_values_for_model_spec_field': (
        FUNCTION, ['model_specs', 'field', 'multi_output_field',
                   'batched_extracts', 'allow_missing']),
    'to_computations': (FUNCTION, ['metrics_specs', 'eval_config']),
    'ExtractSliceKeysFn': (CLASS, ['eval_config', 'materialize']),
    'SingleSliceSpec': (CLASS, ['columns', 'features', 'spec']),
    'get_baseline_model_spec': (FUNCTION, ['eval_config']),
    'validate_metrics': (FUNCTION, ['sliced_metrics', 'eval_config']),
    'CombineValidations': (CLASS, ['eval_config']),
    'convert_slice_metrics_to_proto': (
        FUNCTION, ['metrics', 'add_metrics_callbacks']),
    'convert_slice_plots_to_proto': (
        FUNCTION, ['plots', 'add_metrics_callbacks']),
    'convert_slice_attributions_to_proto': (FUNCTION, ['attributions']),
    'EVAL_CONFIG_FILE': (CONSTANT, None),
    'get_by_keys': (FUNCTION, ['data', 'keys']),
    'prepare_labels_and_predictions': (
        FUNCTION, ['labels', 'predictions', 'prediction_key']),
    'CalibrationBucket': (
        CLASS, ['bucket_id', 'weighted_labels', 'weighted_predictions',
                'weighted_examples']),
}

# The methods the in-process path calls on instances of the classes above.
METHODS = {
    'PreprocessorDoFn': ['setup', 'start_bundle', 'process', 'finish_bundle',
                         'teardown'],
    'ComputationsCombineFn': ['setup', 'create_accumulator', 'add_input',
                              'compact', 'extract_output', 'teardown'],
    'FanoutSlicesDoFn': ['process'],
    'ExtractSliceKeysFn': ['process'],
    'CombineValidations': ['create_accumulator', 'add_input',
                           'extract_output'],
    'CalibrationHistogramCombiner': ['add_input'],
}


def _names_taken():
  """The names tfma_internals takes from TFMA (assigned via _internal)."""
  with open(I.__file__, encoding='utf-8') as f:
    return set(re.findall(r'^(\w+)(?:: \w+)? = _internal\(', f.read(), re.M))


def test_every_internal_taken_is_checked_here():
  assert _names_taken() == set(EXPECTED)


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_the_internal_exists_with_its_kind_and_parameters(name):
  kind, params = EXPECTED[name]
  where = f'tfma_internals.{name} (TFMA {tfma.__version__})'
  assert hasattr(I, name), f'{where} is gone'
  value = getattr(I, name)
  if kind == CONSTANT:
    assert isinstance(value, str) and value, f'{where}: not a name'
    return
  if kind == CLASS:
    assert inspect.isclass(value), f'{where}: no longer a class'
    signature = inspect.signature(value.__init__)
    got = [p for p in signature.parameters if p != 'self']
  else:
    assert inspect.isfunction(value), f'{where}: no longer a function'
    got = list(inspect.signature(value).parameters)
  assert got[:len(params)] == params, (
      f'{where}: parameters {got}, the evaluator passes {params}')
  for method in METHODS.get(name, []):
    assert callable(getattr(value, method, None)), (
        f'{where}: no method {method}')


def test_the_calibration_combiner_keeps_its_settings():
  """FastHistogram reads the combiner's private attributes: the ones
  ``calibration_settings`` returns are the ones it was built with."""
  key = tfma.metrics.PlotKey(
      name='calibration_histogram', model_name='',
      sub_key=tfma.metrics.SubKey(class_id=1))
  combiner = I.CalibrationHistogramCombiner(
      key=key, eval_config=None, aggregation_type=None, class_weights=None,
      example_weighted=True, num_buckets=10, left=0.0, right=2.0,
      prediction_based_bucketing=True, fractional_labels=True)
  settings = I.calibration_settings(combiner)
  assert settings == I.CalibrationSettings(
      key=key, aggregation_type=None, class_weights=None, num_buckets=10,
      left=0.0, range=2.0, prediction_based_bucketing=True,
      fractional_labels=True)


def test_the_combine_fn_exposes_its_combiners():
  combine = I.ComputationsCombineFn([])
  assert I.combiners_of(combine) == []


_IMPORT = re.compile(
    r'^\s*(?:import tensorflow_model_analysis(?:\.[\w.]+)? as (\w+)|'
    r'from tensorflow_model_analysis(?:\.[\w.]+)? import \(?\s*(\w+)'
    r'(?: as (\w+))?)', re.M)

# What the in-process path may still import from TFMA itself: the package,
# its constants (extract keys, file names) and its metric key types.
IN_PROCESS_IMPORTS = {'tfma', 'constants', 'metric_types'}


def _tfma_imports(text):
  """The names a file binds to TFMA modules."""
  return {m.group(1) or m.group(3) or m.group(2)
          for m in _IMPORT.finditer(text)}


def _evaluator_files():
  for path in sorted(glob.glob(os.path.join(PACKAGE, '**', '*.py'),
                               recursive=True)):
    if os.path.basename(path) != 'tfma_internals.py':
      with open(path, encoding='utf-8') as f:
        yield os.path.relpath(path, ROOT), f.read()


def test_no_other_evaluator_file_uses_a_private_tfma_name():
  offenders = []
  for path, text in _evaluator_files():
    for name in _tfma_imports(text):
      if re.search(rf'\b{name}\._[A-Za-z]', text):
        offenders.append(f'{path}: {name}._...')
    if 'protected-access' in text:
      offenders.append(f'{path}: protected-access')
  assert not offenders, (
      f'{offenders}: take TFMA internals in analysis/tfma_internals.py')


def test_the_in_process_path_takes_tfmas_inner_modules_from_one_place():
  for name in ('in_process.py', 'histograms.py'):
    with open(os.path.join(PACKAGE, 'analysis', name), encoding='utf-8') as f:
      imported = _tfma_imports(f.read())
    assert imported <= IN_PROCESS_IMPORTS, (
        f'analysis/{name} imports {sorted(imported - IN_PROCESS_IMPORTS)} '
        'from TFMA: take them in analysis/tfma_internals.py')
