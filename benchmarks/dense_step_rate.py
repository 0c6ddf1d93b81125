"""1b. Dense batches on CPU: what the per-step resets cost per batch, and
what the smaller number of batches gives back per epoch.

The bundled sample at B=32, T = 32 and 128, ``packed`` against ``dense``,
for one LSTM layer and the default conv model: the compiled train step over
one epoch's batches held in memory, the two modes' epochs interleaved, the
median real steps per second (BENCHMARKS.md section 1b)."""

from __future__ import annotations

import statistics
import tempfile
from typing import Any, Dict, List

from benchmarks import harness
from benchmarks.harness import speed

B = 32
UNROLLS = (32, 128)
MODES = ('packed', 'dense')
MODELS = ('lstm', 'conv')
SEED = 0


def _spec(names, unroll: int, model: str):
  from components.stateful import model_spec as ms  # pylint: disable=g-import-not-at-top
  hp = {'learning_rate': 0.01, 'clip_global_norm': 1.0}
  if model == 'lstm':
    hp.update({'model': 'lstm', 'units': [32]})
  return ms.ModelSpec(batch_size=B, num_unroll=unroll, stateful=True,
                      feature_names=tuple(names), label_kind='per_step',
                      task='classification', num_classes=2,
                      hyperparameters=hp, seed=SEED)


class Runner:
  """The compiled train step of one model over one split's batches, held
  in memory as tensors; ``epoch()`` runs one epoch from zero state."""

  def __init__(self, root: str, names, unroll: int, model: str):
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    from components.stateful import batches as batches_lib  # pylint: disable=g-import-not-at-top
    from components.stateful import model_io  # pylint: disable=g-import-not-at-top
    keras.utils.set_random_seed(SEED)
    module = model_io.resolve_module()
    spec = _spec(names, unroll, model)
    self.net = model_io.build_stateful(module, spec)
    self.steps = harness.compiled_steps(self.net, spec, module, build=True,
                                        eval_metrics=True)
    source = batches_lib.BatchSource.open(root, 'train')
    self.held = list(source.dataset())
    self.real = int(sum(float(b['mask'].numpy().sum()) for b in self.held))
    self.efficiency = float(source.meta['efficiency'])
    self.times: List[float] = []

  def epoch(self) -> float:
    return speed.held_epoch(self.net, self.steps.train, self.held)

  def result(self) -> Dict[str, Any]:
    median = statistics.median(self.times)
    return {'batches': len(self.held), 'real': self.real,
            'efficiency': self.efficiency, 'epoch': median,
            'all': self.times, 'per_batch': median / len(self.held),
            'rate': self.real / median}


def measure(roots: Dict[str, str], names, unroll: int, model: str,
            epochs: int) -> Dict[str, Dict[str, Any]]:
  """``{mode: result}``: the modes' epochs interleaved (packed, dense,
  packed, ...) after one untimed (tracing) epoch each, so that load on a
  shared machine falls on both alike."""
  runners = {mode: Runner(roots[mode], names, unroll, model)
             for mode in MODES}
  for runner in runners.values():
    runner.epoch()
  for _ in range(epochs):
    for runner in runners.values():
      runner.times.append(runner.epoch())
  return {mode: runner.result() for mode, runner in runners.items()}


def main(argv=None) -> int:
  parser = harness.parser(__doc__.split('\n')[0])
  parser.add_argument('--epochs', type=int, default=5,
                      help='timed epochs per configuration (median)')
  args = parser.parse_args(argv)
  run = harness.Run()
  seqs, names = harness.sample_sequences()
  if args.quick:
    seqs = seqs[:60]
  results: Dict[tuple, Dict[str, Any]] = {}
  with tempfile.TemporaryDirectory() as tmp:
    for unroll in UNROLLS:
      roots = {mode: harness.write_batches(
          f'{tmp}/{mode}{unroll}', {'train': seqs}, batch_size=B,
          num_unroll=unroll, label_kind='per_step', feature_names=names,
          mode=mode) for mode in MODES}
      for model in MODELS:
        for mode, r in measure(roots, names, unroll, model,
                               args.epochs).items():
          results[(model, unroll, mode)] = r
          print(f'{model} T={unroll} {mode}: {r["batches"]} batches, '
                f'{r["per_batch"] * 1e3:.1f} ms/batch, epoch '
                f'{r["epoch"]:.2f} s, {r["rate"]:,.0f} real steps/s',
                flush=True)
  run.finish()
  rows: List[list] = []
  for model in MODELS:
    for unroll in UNROLLS:
      p, d = results[(model, unroll, 'packed')], results[(model, unroll,
                                                          'dense')]
      for mode, r in (('packed', p), ('dense', d)):
        rows.append([model, unroll, mode, r['batches'],
                     f'{r["efficiency"]:.3f}',
                     f'{r["per_batch"] * 1e3:.1f}', f'{r["epoch"]:.2f}',
                     f'{r["rate"]:,.0f}',
                     harness.ratio(r['per_batch'], p['per_batch']),
                     harness.ratio(r['epoch'], p['epoch'])])
  harness.write_report(
      args, 'dense_step_rate',
      '### 1b. Dense batches on CPU: the step-rate cost',
      run.preamble(args.quick),
      'The bundled sample, B=32, per-step labels; the compiled train step '
      'over one epoch\'s batches held in memory (median of '
      f'{args.epochs} epochs after an untimed one, packed and dense epochs '
      'interleaved). `lstm`: one LSTM layer '
      'of 32 units (fused kernel on `packed`, the cell step by step through '
      'the resetting wrapper on `dense`); `conv`: the default model. The '
      'last two columns are against `packed` at the same T.',
      harness.table(['model', 'T', 'mode', 'batches / epoch', 'efficiency',
                    'ms / batch', 's / epoch', 'real steps / s',
                    'per batch vs packed', 'per epoch vs packed'], rows,
                   align='lrlrrrrrrr'))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
