"""Memory benchmark: stateful training vs the reset-every-batch ablation.

Not a test (pytest does not collect it): it produces the figures quoted in
docs/stateful_trainer.md. Run from the repository root::

  python -m tests.components.stateful_trainer.memory_benchmark \
      --data sample --label-kind per_sequence --epochs 15

``--data sample`` reads ``data/sample/*.csv`` (300 cue sequences; every 5th
sequence by key goes to eval); ``--data generated`` uses the settings of
``test_memory.py``. Accuracy is scored at each eval sequence's last real
step, split into sequences that fit one segment (``short``) and sequences
longer than one segment (``long``, which need carried state).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import tempfile
import time
from typing import List, Tuple

import numpy as np
import tf_keras as keras

from components.sequence_batcher import layout
from components.stateful import model_io
from components.stateful_trainer import settings
from components.stateful_trainer import optimizers
from components.stateful_trainer import training
from components.stateful import batches as batches_lib
from components.stateful import objective as objective_lib
from components.stateful import steps as steps_lib
from tests.components.stateful_trainer import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def sample_sequences() -> Tuple[List[layout.SequenceArrays], List[str]]:
  """``data/sample`` as whole sequences (grouped by seq_id, sorted by t)."""
  rows = {}
  names = None
  for path in sorted(glob.glob(os.path.join(ROOT, 'data', 'sample',
                                            '*.csv'))):
    with open(path, newline='') as f:
      reader = csv.DictReader(f)
      names = [c for c in reader.fieldnames if c.startswith('f')]
      for row in reader:
        rows.setdefault(row['seq_id'], []).append(
            (int(row['t']), [float(row[n]) for n in names],
             int(row['label'])))
  seqs = []
  for key in sorted(rows):
    steps = sorted(rows[key])
    seqs.append(layout.SequenceArrays(
        key=key, features=np.array([s[1] for s in steps], np.float32),
        labels=np.array([s[2] for s in steps], np.int64)))
  return seqs, names


def last_step_accuracy(model, source, batch_size, num_unroll, reset_all):
  hits = {'short': [], 'long': []}
  for batch, outputs in steps_lib.predict_batches(
      model, source.dataset(keys=None), reset_all=reset_all):
    for lane in range(batch_size):
      length = int(batch['sequence_length'][lane])
      k = int(batch['segment_index'][lane])
      if k < 0 or (length - 1) // num_unroll != k:
        continue
      pos = (length - 1) % num_unroll
      hits['long' if length > num_unroll else 'short'].append(
          int(np.argmax(outputs[lane, pos])) == int(batch['labels'][lane,
                                                                    pos]))
  return {k: {'accuracy': round(float(np.mean(v)), 4) if v else None,
              'sequences': len(v)} for k, v in hits.items()}


def run(args) -> dict:
  if args.data == 'sample':
    seqs, names = sample_sequences()
    train = [s for i, s in enumerate(seqs) if i % 5 != 4]
    evals = [s for i, s in enumerate(seqs) if i % 5 == 4]
  else:
    seqs, names = helpers.cue_sequences(800, seed=1,
                                        num_unroll=args.num_unroll,
                                        median_length=48)
    split = int(0.75 * len(seqs))
    train, evals = seqs[:split], seqs[split:]
  root = helpers.write_batches(
      tempfile.mkdtemp(prefix='memory_benchmark_'),
      {'train': train, 'eval': evals}, batch_size=args.batch_size,
      num_unroll=args.num_unroll, mode=args.mode,
      label_kind=args.label_kind, feature_names=names)
  train_src = batches_lib.BatchSource.open(root, 'train')
  eval_src = batches_lib.BatchSource.open(root, 'eval')
  report = {'settings': vars(args), 'train_batches': train_src.num_batches,
            'eval_long_sequences': sum(s.length > args.num_unroll
                                       for s in evals)}
  for name, ablation in (('stateful', False), ('ablation', True)):
    spec = helpers.classification_spec(
        args.batch_size, args.num_unroll, names, label_kind=args.label_kind,
        seed=args.seed, units=[args.units], learning_rate=args.lr)
    keras.utils.set_random_seed(args.seed)
    module = model_io.resolve_module()
    model = model_io.build_stateful(module, spec)
    started = time.monotonic()
    result = training.fit(
        model, optimizer=optimizers.make_optimizer(
            settings.OptimizerConfig.from_hyperparameters(
                spec.hyperparameters)),
        objective=objective_lib.make_objective(spec, module), train=train_src,
        eval_source=eval_src,
        config=settings.TrainConfig(epochs=args.epochs, seed=args.seed,
                                    log_every_n_steps=0,
                                    validation_fraction=0.0,
                                    eval_each_epoch=True,
                                    reset_state_every_batch=ablation))
    report[name] = {
        'seconds': round(time.monotonic() - started, 1),
        'eval_by_epoch': [round(e.eval['accuracy'], 4)
                          for e in result.epochs],
        'last_step': last_step_accuracy(model, eval_src, args.batch_size,
                                        args.num_unroll, ablation),
        'steps_per_sec_last_epoch': round(result.epochs[-1].steps_per_sec, 1),
        'real_timesteps_per_sec_last_epoch': round(
            result.epochs[-1].real_steps_per_sec),
    }
  return report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', choices=('sample', 'generated'),
                      default='sample')
  parser.add_argument('--label-kind', choices=('per_sequence', 'per_step'),
                      default='per_sequence')
  parser.add_argument('--mode', choices=('packed', 'bucketed'),
                      default='packed')
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--num-unroll', type=int, default=32)
  parser.add_argument('--epochs', type=int, default=15)
  parser.add_argument('--units', type=int, default=32)
  parser.add_argument('--lr', type=float, default=0.01)
  parser.add_argument('--seed', type=int, default=0)
  print(json.dumps(run(parser.parse_args(argv)), indent=1))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
