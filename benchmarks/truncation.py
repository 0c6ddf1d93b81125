"""10. Truncated BPTT against full back-propagation, on real data.

The plain LSTM module and the LRU trained by the StatefulTrainer at T in
{16, 64, 256, whole} and by a Keras ``fit`` of the same model on whole
padded sequences, each for the same wall-clock budget in a fresh process,
on three UCR/UEA sets and one forecast. BENCHMARKS.md section 10."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any, Dict, List

import numpy as np

from benchmarks import harness
from benchmarks import ucr

SETS = (
    # (name, forecast)
    ('ACSF1', False),
    ('ArrowHead', False),
    ('JapaneseVowels', False),
    ('ItalyPowerDemand', True),
)
UNROLLS = (16, 64, 256)
MODELS = ('lstm', 'lru')
LSTM_MODULE = os.path.join(harness.ROOT, 'benchmarks', 'lstm_module.py')
SEED = 0


def _load(name: str, forecast: bool, tmp: str):
  """(train, eval) SequenceArrays z-scored with train statistics, names."""
  import glob  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top
  out = f'{tmp}/{name}{"-fc" if forecast else ""}'
  ucr.convert(name, out, forecast=forecast)
  splits = {}
  for split in ('train', 'eval'):
    df = pd.concat([pd.read_csv(p, dtype={'seq_id': str})
                    for p in sorted(glob.glob(f'{out}/{split}/*.csv'))])
    splits[split], names = harness.frame_sequences(df)
  feats = np.concatenate([s.features for s in splits['train']])
  mean, std = feats.mean(0), feats.std(0) + 1e-6
  for seqs in splits.values():
    for s in seqs:
      s.features = ((s.features - mean) / std).astype(np.float32)
  return splits['train'], splits['eval'], names


def _score(task: str, seqs, outputs: Dict[str, Any]) -> float:
  if task == 'classification':
    return float(np.mean([int(np.argmax(outputs[s.key][s.length - 1])) ==
                          int(s.labels[-1]) for s in seqs]))
  return float(np.mean(np.concatenate(
      [(outputs[s.key][:, 0] - s.labels) ** 2 for s in seqs])))


def _module_and_hp(model: str):
  from components.stateful import model_io  # pylint: disable=g-import-not-at-top
  if model == 'lstm':
    return model_io.resolve_module(LSTM_MODULE), LSTM_MODULE, {}
  return model_io.resolve_module(), None, {'model': 'lru'}


def child(opts: Dict[str, Any]) -> Dict[str, Any]:
  """One run in a fresh process (``harness.call``)."""
  import pickle  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  args = types.SimpleNamespace(**opts)
  with open(args.data, 'rb') as f:
    data = pickle.load(f)
  return (ours if args.method == 'ours' else keras_full)(
      args, data['train'], data['eval'], data['names'], data['task'])


def ours(args, train, evals, names, task) -> Dict[str, Any]:
  from components.stateful import batches as batches_lib  # pylint: disable=g-import-not-at-top
  from components.stateful import steps as steps_lib  # pylint: disable=g-import-not-at-top
  _, module_file, hp = _module_and_hp(args.model)
  root = harness.write_batches(
      f'{args.tmp}/batches', {'train': train, 'eval': evals},
      batch_size=args.lanes, num_unroll=args.unroll, feature_names=names,
      label_kind='per_step' if args.per_step else 'per_sequence')
  result = harness.run_trainer(
      root, args.tmp, {'epochs': 100000, 'max_seconds': args.budget,
                       'validation_fraction': 0.0, 'refit': False,
                       'seed': SEED},
      module_file=module_file, task=task, hyperparameters=hp)
  source = batches_lib.BatchSource.open(root, 'eval')
  outputs = {r.key: r.outputs for r in batches_lib.lanes_to_sequences(
      steps_lib.predict_batches(result.model, source.dataset(keys=None)),
      args.unroll, fields=())}
  rates = [e.real_steps_per_sec for e in result.fit.epochs[1:]] or [
      e.real_steps_per_sec for e in result.fit.epochs]
  return {'metric': _score(task, evals, outputs),
          'rate': statistics.median(rates) if rates else float('nan'),
          'epochs': len(result.fit.epochs), 'steps': result.fit.steps}


def keras_full(args, train, evals, names, task) -> Dict[str, Any]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  from components.stateful import batches as batches_lib  # pylint: disable=g-import-not-at-top
  from components.stateful import model_io  # pylint: disable=g-import-not-at-top
  from components.stateful import model_spec as ms  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import model_setup  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import settings  # pylint: disable=g-import-not-at-top
  module, _, hp = _module_and_hp(args.model)
  longest = max(s.length for s in train)
  kwargs = (dict(num_classes=int(max(int(s.labels[-1]) for s in train)) + 1)
            if task == 'classification' else dict(output_size=1))
  spec = ms.ModelSpec(
      batch_size=args.lanes, num_unroll=longest, stateful=True,
      feature_names=tuple(names), task=task,
      label_kind=ms.PER_STEP if args.per_step else ms.PER_SEQUENCE,
      hyperparameters=hp, seed=SEED, **kwargs)
  keras.utils.set_random_seed(SEED)
  stateful = model_io.build_stateful(module, spec)
  scoring = (module.label_scoring(spec) if hasattr(module, 'label_scoring')
             else model_setup.label_scoring_rule(stateful, spec)[0])
  model = model_io.build_serving(module, spec, weights_from=stateful)
  feats, labels, mask = harness.padded(train, longest)
  if args.per_step:
    weight = mask
  else:
    weight = batches_lib.label_weights(
        {'mask': tf.constant(mask), 'label_weight': tf.constant(
            np.eye(longest, dtype=np.float32)[[s.length - 1 for s in train]]),
         'segment_index': tf.zeros(len(train), tf.int64),
         'sequence_length': tf.constant([s.length for s in train],
                                        tf.int64)},
        scoring, longest).numpy()
  if task == 'classification':
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  else:
    loss = keras.losses.MeanSquaredError()
    labels = labels[..., None]
  model.compile(optimizer=keras.optimizers.Adam(
      settings.OPTIMIZER_DEFAULTS['learning_rate'], global_clipnorm=1.0,
      jit_compile=False), loss=loss)
  marks: List[float] = []

  class Clock(keras.callbacks.Callback):

    def on_train_begin(self, logs=None):
      self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
      marks.append(time.perf_counter() - self.started)
      if marks[-1] > args.budget:
        self.model.stop_training = True

  data = tf.data.Dataset.from_tensor_slices(
      (feats, labels, weight * mask)).shuffle(
          len(train), seed=SEED, reshuffle_each_iteration=True).batch(
              args.lanes)
  model.fit(data, epochs=100000, verbose=0, callbacks=[Clock()])
  steps_done = len(marks)
  batches = -(-len(train) // args.lanes)
  real = float(mask.sum())
  seconds = marks[-1] - marks[0] if steps_done > 1 else float('nan')
  rate_real = (real * (steps_done - 1) / batches) / seconds
  outputs = {}
  seqs = sorted(evals, key=lambda s: s.length)
  for i in range(0, len(seqs), args.lanes):
    group = seqs[i:i + args.lanes]
    x, _, _ = harness.padded(group)
    out = model(x, training=False).numpy()
    for j, s in enumerate(group):
      outputs[s.key] = out[j, :s.length]
  return {'metric': _score(task, evals, outputs), 'rate': rate_real,
          'epochs': steps_done / batches, 'steps': steps_done}


def main(argv=None) -> int:
  parser = harness.parser(__doc__.split('\n')[0])
  parser.add_argument('--budget', type=float, default=None,
                      help='training seconds per run (default 30; --quick 8)')
  args = parser.parse_args(argv)
  import pickle  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import layout_rule  # pylint: disable=g-import-not-at-top
  log = harness.progress_log('truncation')
  budget = args.budget or (8.0 if args.quick else 30.0)
  sets = SETS[1:3] if args.quick else SETS
  run = harness.Run()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name, forecast in sets:
      train, evals, names = _load(name, forecast, tmp)
      task = 'regression' if forecast else 'classification'
      longest = max(s.length for s in train + evals)
      lanes, _ = layout_rule.choose_layout([s.length for s in train])
      unrolls = sorted({min(t, longest) for t in UNROLLS} | {longest})
      path = f'{tmp}/{name}.pkl'
      with open(path, 'wb') as f:
        pickle.dump({'train': train, 'eval': evals, 'names': names,
                     'task': task}, f)
      log(f'{name}{" (forecast)" if forecast else ""}: {len(train)} train / '
          f'{len(evals)} eval sequences, longest {longest}, B={lanes}')
      for model in MODELS:
        runs = [('ours', t) for t in unrolls] + [('keras', longest)]
        for method, unroll in runs:
          out, got = harness.call(
              'truncation.child', {
                  'data': path, 'method': method, 'model': model,
                  'tmp': f'{tmp}/{name}-{model}-{method}-{unroll}',
                  'unroll': unroll, 'lanes': lanes, 'budget': budget,
                  'per_step': forecast}, timeout=budget * 6 + 600, echo=False)
          if out is None:
            log(f'  {model} {method} T={unroll}: failed: '
                f'{got.stderr.strip().splitlines()[-1:]}')
            continue
          out['peak'] = got.peak.tree
          label = ('Keras fit, full BPTT' if method == 'keras' else
                   f'ours, T={"whole" if unroll == longest else unroll}')
          log(f'  {model} {label}: {out["metric"]:.4f}, '
              f'{out["rate"]:,.0f} real steps/s, {harness.mib(out["peak"])}')
          rows.append([name + (' (forecast, MSE)' if forecast else ''),
                       model, label, f'{out["metric"]:.4f}',
                       f'{out["rate"]:,.0f}', f'{out["epochs"]:.1f}',
                       harness.mib(out['peak'])])
  run.finish()
  harness.write_report(
      args, 'truncation',
      '## 10. Truncated BPTT against full back-propagation',
      run.preamble(args.quick),
      f'Every run: {budget:g} s of training (the StatefulTrainer\'s '
      '`max_seconds`; a Keras callback), no validation carve, no refit, '
      'seed 0; then scored on the eval split (accuracy at the last step; '
      'MSE over every step for the forecast). B = the layout rule\'s for '
      'the train lengths, the same for Keras. "whole" = T as long as the '
      'longest sequence (no truncation). Rates: real steps per second '
      'after the first epoch (ours) or the first batch (Keras).',
      harness.table(['data set', 'model', 'training', 'eval score',
                    'real steps / s', 'epochs', 'peak RSS'], rows,
                   align='lllrrrr'))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
