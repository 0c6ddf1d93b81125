"""TensorFlow Model Analysis over the stateful extracts, on Beam.

TFMA's ``run_model_analysis`` refuses change thresholds without baseline
``EvalSharedModel``s; model-agnostic evaluation needs none, so the pipeline
is built from TFMA's own extract / evaluate / write transforms, with the
config of ``config.complete_config``. The output folder has the stock
Evaluator's layout; ``results`` reads it back and writes the verdict.
"""

from __future__ import annotations

from typing import Callable

import apache_beam as beam
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.evaluators import (
    metrics_plots_and_validations_evaluator as mpv_evaluator)
from tensorflow_model_analysis.extractors import example_weights_extractor
from tensorflow_model_analysis.extractors import features_extractor
from tensorflow_model_analysis.extractors import labels_extractor
from tensorflow_model_analysis.extractors import (
    materialized_predictions_extractor)
from tensorflow_model_analysis.extractors import slice_key_extractor
from tensorflow_model_analysis.extractors import unbatch_extractor
from tfx_bsl.public import tfxio

def run(extracts_path: str, config: tfma.EvalConfig, output_dir: str,
        make_pipeline: Callable[[], beam.Pipeline] = beam.Pipeline) -> None:
  """Runs TFMA over the extracts; writes the stock Evaluator's files."""
  source = tfxio.TFExampleRecord(
      file_pattern=extracts_path,
      raw_record_column_name=tfma.ARROW_INPUT_COLUMN)
  extractors = [
      features_extractor.FeaturesExtractor(eval_config=config),
      labels_extractor.LabelsExtractor(eval_config=config),
      example_weights_extractor.ExampleWeightsExtractor(eval_config=config),
      materialized_predictions_extractor.MaterializedPredictionsExtractor(
          eval_config=config),
      unbatch_extractor.UnbatchExtractor(),
      slice_key_extractor.SliceKeyExtractor(eval_config=config),
  ]
  evaluators = [mpv_evaluator.MetricsPlotsAndValidationsEvaluator(
      eval_config=config)]
  writers = tfma.default_writers(
      output_path=output_dir, eval_config=config,
      display_only_data_location=extracts_path,
      display_only_data_file_format='tfrecords')
  with make_pipeline() as p:
    _ = (p
         | 'ReadExtracts' >> source.BeamSource()
         | 'ToExtracts' >> tfma.BatchedInputsToExtracts()
         | 'ExtractAndEvaluate' >> tfma.ExtractAndEvaluate(
             extractors=extractors, evaluators=evaluators)
         | 'WriteResults' >> tfma.WriteResults(writers=writers))
