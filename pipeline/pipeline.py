"""The pipeline: one ``create_pipeline(config)``, every setting a field of
``PipelineConfig``.

  ExampleGen (split by sequence key) -> StatisticsGen -> SchemaGen
  -> ExampleValidator -> Transform (z-score features) -> SequenceBatcher
  -> StatefulTrainer -> resolver (latest blessed model) -> StatefulEvaluator
  -> Pusher (only a blessed model)

CSV rows go through Transform (z-scores fitted on the train split, kept in
the serving graph): Transform analyses (``materialize=False``) and the
SequenceBatcher applies its graph to ExampleGen's rows as it decodes them,
so the transformed rows are never written and read again
(``PipelineConfig.materialize_transform`` restores TFX's transformed
examples).
SequenceExamples (ImportExampleGen) go to the SequenceBatcher as they are
(tf.Transform does not analyse sequence feature lists), so their features
reach the model unscaled. The default model's
convolutional form scales its inputs itself: per feature ``(x - median) /
IQR`` fitted on the training steps, then ``sign(x) log(1 + |x|)``
(``components/stateful/models/default_model.py``), which no per-feature affine
scaling upstream changes, so both inputs give it the same model. Its LSTM/GRU
forms and a user module get the values as the batches hold them (z-scores
for CSV, raw for SequenceExamples) and scale nothing themselves.
"""

from __future__ import annotations

import os
from typing import List, Optional

# TFX's classes from their own modules, the ones ``tfx.v1`` re-exports:
# importing ``tfx.v1`` also imports its Google Cloud extensions
# (``google.cloud.aiplatform``: about 4 CPU seconds of the main job's start),
# which nothing here uses.
from tfx.components import ExampleValidator
from tfx.components import ImportExampleGen
from tfx.components import Pusher
from tfx.components import SchemaGen
from tfx.components import StatisticsGen
from tfx.components import Transform
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import example_gen_pb2
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.types.channel import Channel

from components.sequence_batcher.component import SequenceBatcher
from components.stateful.distribution import lanes
from components.stateful_evaluator.component import StatefulEvaluator
from components.stateful_trainer.component import StatefulTrainer
from pipeline import beam_options
from pipeline import csv_example_gen
from pipeline import pipeline_config
from pipeline import split_check

CSV = 'csv'
SEQUENCE_EXAMPLE = 'sequence_example'
TRAINER_ID = 'StatefulTrainer'
CHECKPOINTS_SUBDIR = 'checkpoints'


def default_checkpoint_dir(pipeline_root: str) -> str:
  """Where the trainer keeps checkpoints unless told: under the pipeline
  root, beside its outputs (``<pipeline_root>/StatefulTrainer/checkpoints``);
  they outlive the execution, so a re-run with the same inputs resumes."""
  return '/'.join([pipeline_root.rstrip('/'), TRAINER_ID, CHECKPOINTS_SUBDIR])


def _has_split_folders(data_root: str) -> bool:
  return all(os.path.isdir(os.path.join(data_root, s))
             for s in ('train', 'eval'))


def example_gen_configs(data_root: str, key_column: str,
                        train_hash_buckets: int, eval_hash_buckets: int):
  """(input_config, output_config) for ExampleGen.

  ``train/`` and ``eval/`` subfolders are used as given; otherwise the files
  are split by a hash of the *sequence key*, never by row, so a sequence never
  straddles train and eval.
  """
  if _has_split_folders(data_root):
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name='train', pattern='train/*'),
        example_gen_pb2.Input.Split(name='eval', pattern='eval/*'),
    ])
    return input_config, None
  output_config = example_gen_pb2.Output(
      split_config=example_gen_pb2.SplitConfig(
          splits=[
              example_gen_pb2.SplitConfig.Split(
                  name='train', hash_buckets=train_hash_buckets),
              example_gen_pb2.SplitConfig.Split(
                  name='eval', hash_buckets=eval_hash_buckets),
          ],
          partition_feature_name=key_column))
  return None, output_config


def create_pipeline(config: pipeline_config.PipelineConfig, *,
                    pipeline_root: str,
                    metadata_connection_config=None,
                    beam_pipeline_args: Optional[List[str]] = None,
                    data_root: Optional[str] = None,
                    serving_dir: Optional[str] = None,
                    trainer_workers: int = 1) -> Pipeline:
  """Builds the TFX pipeline (same graph locally and on Kubeflow).

  Both runners call it, so they compile the same pipeline. Every setting is
  a field of ``config`` (``pipeline_config.PipelineConfig``, each declared
  there with its default and help; docs/configuration.md); the arguments
  here say where the run is:

  Args:
    config: the settings: the columns and layout reach the SequenceBatcher,
      ``config.trainer`` (every field) the StatefulTrainer,
      ``config.eval_config`` and ``config.evaluator`` the StatefulEvaluator.
    pipeline_root: where the artifacts go.
    metadata_connection_config: ML Metadata's (None: the orchestrator's).
    beam_pipeline_args: the components' Beam options.
    data_root: the data as the orchestrator reads it (default:
      ``config.data_root``).
    serving_dir: where the Pusher copies a blessed model (default:
      ``config.serving_dir``).
    trainer_workers: the workers the trainer runs on (Kubeflow: a TFJob,
      ``kubeflow/compile.py --trainer-workers``); with ``trainer.replicas``
      it sets the SequenceBatcher's ``lane_multiple`` (batch_size is a
      multiple of replicas x workers). The trainer's checkpoints go to
      ``config.checkpoint_dir`` (default
      ``default_checkpoint_dir(pipeline_root)``).
  """
  c = config
  data_root = data_root or c.data_root
  input_format, key_column, order_column, label_column = (
      c.input_format, c.key_column, c.order_column, c.label_column)
  feature_columns, exclude_columns, task = (c.feature_columns,
                                            c.exclude_columns, c.task)
  input_config, output_config = example_gen_configs(
      data_root, key_column, c.train_hash_buckets, c.eval_hash_buckets)
  if input_format == CSV:
    # TFX's CsvExampleGen, except that the key and order columns are always
    # text ('007' and '7' are two sequences; order values stay exact).
    example_gen = csv_example_gen.make_csv_example_gen(
        data_root, key_column, input_config, output_config, order_column,
        label_column)
  elif input_format == SEQUENCE_EXAMPLE:
    example_gen = ImportExampleGen(
        input_base=data_root, input_config=input_config,
        output_config=output_config,
        payload_format=example_gen_pb2.PayloadFormat.FORMAT_TF_SEQUENCE_EXAMPLE)
  else:
    raise ValueError(f'input_format must be {CSV!r} or {SEQUENCE_EXAMPLE!r}, '
                     f'got {input_format!r}')
  statistics_gen = StatisticsGen(
      examples=example_gen.outputs['examples'])
  schema_gen = SchemaGen(
      statistics=statistics_gen.outputs['statistics'],
      infer_feature_shape=True)
  example_validator = ExampleValidator(
      statistics=statistics_gen.outputs['statistics'],
      schema=schema_gen.outputs['schema'])
  components = [example_gen, statistics_gen, schema_gen, example_validator]
  batcher_input, transform_graph = example_gen.outputs['examples'], None
  if input_format == CSV:
    transform = Transform(
        examples=example_gen.outputs['examples'],
        schema=schema_gen.outputs['schema'],
        # A dotted path: importable from the installed package in a container
        # image as well as locally (no user-code wheel to ship).
        preprocessing_fn=pipeline_config.TRANSFORM_FN,
        custom_config={
            'key_column': key_column, 'order_column': order_column,
            'label_column': label_column, 'task': task,
            'feature_columns': list(feature_columns or []),
            'exclude_columns': list(exclude_columns),
        },
        # The batcher applies the graph to the raw rows (read once) unless
        # the transformed examples are asked for.
        materialize=c.materialize_transform)
    components.append(transform)
    transform_graph = transform.outputs['transform_graph']
    if c.materialize_transform:
      batcher_input, transform_graph = (
          transform.outputs['transformed_examples'], None)
  batcher = SequenceBatcher(
      examples=batcher_input, **c.batcher_settings(),
      lane_multiple=lanes.lane_multiple(c.trainer.replicas, trainer_workers),
      transform_graph=transform_graph)
  trainer = StatefulTrainer(
      batches=batcher.outputs['batches'],
      transform_graph=(transform.outputs['transform_graph']
                       if input_format == CSV else None),
      module_file=c.module_file, task=task,
      custom_config={'hyperparameters': dict(c.hyperparameters)},
      checkpoint_dir=(c.checkpoint_dir or
                      default_checkpoint_dir(pipeline_root)),
      fresh=c.fresh, **c.trainer.to_dict())
  latest_blessed = Resolver(
      strategy_class=(
          latest_blessed_model_strategy.LatestBlessedModelStrategy),
      model=Channel(type=standard_artifacts.Model),
      model_blessing=Channel(type=standard_artifacts.ModelBlessing),
  ).with_id('latest_blessed_model_resolver')
  evaluator = StatefulEvaluator(
      model=trainer.outputs['model'], batches=batcher.outputs['batches'],
      baseline_model=latest_blessed.outputs['model'],
      eval_config=dict(c.eval_config) if c.eval_config else None,
      settings=c.evaluator)
  pusher = Pusher(
      model=trainer.outputs['model'],
      model_blessing=evaluator.outputs['blessing'],
      push_destination=pusher_pb2.PushDestination(
          filesystem=pusher_pb2.PushDestination.Filesystem(
              base_directory=serving_dir or c.serving_dir)))
  components += [batcher, trainer, latest_blessed, evaluator, pusher]
  # Runner-specific parts (issue 11): an empty ExampleGen split stops the run
  # in one line, and components a runner cannot run stay on the DirectRunner.
  beam_pipeline_args = beam_options.with_dependency_flags(
      beam_pipeline_args or [])
  runner = beam_options.runner_name(beam_pipeline_args)
  split_check.add_split_check(components, example_gen, runner)
  beam_options.route_components(components, beam_pipeline_args)
  return Pipeline(
      pipeline_name=c.pipeline_name,
      pipeline_root=pipeline_root,
      components=components,
      enable_cache=c.enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args)


# The name older checkouts give it with the same signature (91548d4's):
# benchmarks/same_batches.py builds the pipeline of both with it.
create_pipeline_from_config = create_pipeline
