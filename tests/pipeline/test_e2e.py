"""End to end: the whole local pipeline on tiny generated data.

CSV rows (Transform on) and SequenceExamples (ImportExampleGen). Each run
completes, blesses and pushes; the pushed SavedModel reproduces the
evaluator's chunked stateful predictions from raw features; a second run is
served from TFX's cache; ``summary.json`` has the documented fields.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma

from components.sequence_batcher import load_metadata
from components.stateful_evaluator.extraction import models as models_lib
from components.stateful_evaluator.extraction import extracts as extracts_lib
from data import generate
from pipeline import flags as flags_lib
from pipeline import local_runner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
UPSTREAM = ('CsvExampleGen', 'StatisticsGen', 'SchemaGen', 'ExampleValidator',
            'Transform', 'SequenceBatcher', 'StatefulTrainer')


def _make_csv(root: str) -> dict:
  """96 short-ish cue sequences in two CSV files (enough eval sequences
  for the no-skill gate's significance test); returns the raw rows."""
  rows = generate.generate(96, seed=3, median_length=40.0, max_length=160,
                           num_features=3)
  generate.write_csv(rows, root, num_shards=2)
  return rows


def _flags(data_root, out, *extra):
  return ['--data-root', str(data_root), '--output-dir', str(out),
          '--batch-size', '4', '--num-unroll', '8', '--epochs', '2',
          *extra]


def _raw_sequences(rows: dict, keys):
  """Raw feature arrays float32[L, F] of ``keys`` from generated columns."""
  names = sorted(k for k in rows if k.startswith('f'))
  out = {}
  for key in keys:
    sel = rows['seq_id'] == key
    order = np.argsort(rows['t'][sel])
    out[key] = np.stack([rows[n][sel][order] for n in names],
                        axis=1).astype(np.float32)
  return out


def _chunked_last_step_probabilities(model_uri: str, batches_uri: str,
                                     work: str):
  """The evaluator's own chunked stateful pass over the eval batches: the
  class probabilities at each sequence's last step."""
  _, meta = load_metadata(batches_uri, 'eval')
  loaded = models_lib.load_model(model_uri, meta)
  no_skill = extracts_lib.NoSkill.from_batches(batches_uri, 'train',
                                               loaded.spec)
  stats = extracts_lib.write_extracts(loaded, None, batches_uri, 'eval',
                                      no_skill, work)
  out = {}
  for record in tf.data.TFRecordDataset(stats.path, compression_type='GZIP'):
    feats = tf.train.Example.FromString(record.numpy()).features.feature
    out[feats['key'].bytes_list.value[0].decode()] = np.array(
        feats['prediction'].float_list.value)
  return out


def _check_summary(summary: dict, out) -> None:
  with open(os.path.join(out, 'summary.json')) as f:
    on_disk = json.load(f)
  assert on_disk == json.loads(json.dumps(summary))
  for split in ('train', 'eval'):
    stats = on_disk['batcher'][split]
    for key in ('num_sequences', 'num_batches', 'real_timesteps',
                'padded_timesteps', 'efficiency'):
      assert key in stats, (split, key)
    assert stats['efficiency'] == pytest.approx(
        stats['real_timesteps'] /
        (stats['real_timesteps'] + stats['padded_timesteps']))
  assert set(on_disk['eval']) >= {'loss', 'accuracy'}
  assert on_disk['blessed'] is True
  assert on_disk['pushed_model'] and os.path.isdir(on_disk['pushed_model'])
  for name in UPSTREAM + ('StatefulEvaluator', 'Pusher'):
    assert 'seconds' in on_disk['components'][name], name


def test_csv_pipeline_blesses_pushes_serves_and_caches(tmp_path):
  data = tmp_path / 'data'
  rows = _make_csv(str(data))
  out = tmp_path / 'out'
  total_rows = len(rows['seq_id'])
  args, beam_args = flags_lib.build_parser().parse_known_args(
      _flags(data, out))
  config = flags_lib.config_from_args(args)
  summary = local_runner.run(config, beam_args)
  _check_summary(summary, out)
  batcher = summary['batcher']
  # Every generated row is a real time step of train or eval.
  assert (batcher['train']['real_timesteps'] +
          batcher['eval']['real_timesteps']) == total_rows

  # The pushed model serves raw features and reproduces the evaluator.
  loaded = tf.saved_model.load(summary['pushed_model'])
  assert {'serving_default', 'step'} <= set(loaded.signatures)
  expected = _chunked_last_step_probabilities(
      summary['model_uri'], summary['batches_uri'], str(tmp_path / 'chunked'))
  raw = _raw_sequences(rows, sorted(expected))
  lengths = np.array([len(raw[k]) for k in sorted(raw)], np.int64)
  padded = np.zeros((len(raw), lengths.max(), 3), np.float32)
  for i, k in enumerate(sorted(raw)):
    padded[i, :lengths[i]] = raw[k]
  served = loaded.signatures['serving_default'](
      features=tf.constant(padded), lengths=tf.constant(lengths))
  want = np.stack([expected[k] for k in sorted(raw)])
  np.testing.assert_allclose(tf.nn.softmax(served['logits']).numpy(), want,
                             atol=1e-5)

  # The evaluation is TFMA's: metrics overall and per length bucket, the
  # confusion matrix plot.
  result = tfma.load_eval_result(summary['evaluation_uri'])
  slices = dict(result.slicing_metrics)
  assert slices[()]['']['']['sparse_categorical_accuracy'][
      'doubleValue'] == pytest.approx(summary['eval']['accuracy'])
  assert any(dict(k).get('length_bucket') for k in slices)
  assert any(p.plot_keys_and_values[0].value.HasField(
      'multi_class_confusion_matrix_at_thresholds')
             for p in tfma.load_plots(summary['evaluation_uri']))

  # An unchanged re-run is served from the cache up to the trainer.
  second = local_runner.run(config, beam_args)
  assert set(UPSTREAM) <= set(second['cached']), second['components']
  assert second['model_uri'] == summary['model_uri']
  assert second['blessed'] is True


def test_sequence_example_pipeline(tmp_path):
  csv_dir = tmp_path / 'csv'
  _make_csv(str(csv_dir))
  se_dir = tmp_path / 'se'
  subprocess.run([sys.executable, os.path.join(ROOT, 'data',
                                               'to_sequence_examples.py'),
                  '--input', str(csv_dir / '*.csv'), '--output', str(se_dir)],
                 check=True, capture_output=True)
  out = tmp_path / 'out'
  code = local_runner.main(_flags(se_dir, out, '--input-format',
                                  'sequence_example'))
  assert code == 0
  with open(out / 'summary.json') as f:
    summary = json.load(f)
  assert summary['blessed'] is True
  assert summary['batcher']['train']['num_sequences'] + summary['batcher'][
      'eval']['num_sequences'] == 96
  assert tf.saved_model.load(summary['pushed_model']).signatures[
      'serving_default'] is not None


def test_runner_gives_one_line_errors(tmp_path, capsys):
  assert local_runner.main(['--data-root', str(tmp_path / 'nope'),
                            '--output-dir', str(tmp_path / 'o')]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error:') and 'nope' in err and '\n' not in err
  with pytest.raises(SystemExit):
    local_runner.main(['--batch-size', '0'])
  assert 'must be at least 1' in capsys.readouterr().err
