"""1b. Dense batches on CPU: what the per-step resets cost per batch, and
what the smaller number of batches gives back per epoch.

The bundled sample (``data/sample``: 300 ``cue`` sequences, 10..2686 steps,
per-step labels), laid out at B=32 with T = 32 and 128 in ``packed`` and in
``dense`` mode. Two models, both from the shipped module with the same
seed:

* ``lstm``: one LSTM layer of 32 units and a Dense head. On ``packed``
  batches Keras runs its fused LSTM kernel; on ``dense`` batches the cell
  runs step by step through the state protocol's resetting wrapper
  (``resets.step_resets``);
* ``conv``: the default model (dilated causal convolutions and running
  pools; the trainer's gradient step on its head). On ``dense`` batches each
  tap and pool restarts at the resets.

For each (model, T) and both modes the compiled train step
(``steps.compile_steps``) runs over one epoch's batches held in memory as
tensors: one untimed epoch each (tracing), then ``--epochs`` timed epochs,
the two modes' epochs interleaved so that load on a shared machine falls on
both alike; the table gives the median. Real
steps per second = the epoch's real (unpadded) time steps / its seconds.

  PYTHONPATH=. python -m benchmarks.dense_step_rate [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any, Dict, List

from benchmarks import harness

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
    from components.stateful.state import protocol as state  # pylint: disable=g-import-not-at-top
    state.zero_all(self.net)
    t0 = time.perf_counter()
    out = None
    for batch in self.held:
      out = self.steps.train(batch)
    next(iter(out.values())).numpy()  # Wait for the last step.
    return time.perf_counter() - t0

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
  body = [
      '### 1b. Dense batches on CPU: the step-rate cost',
      '',
      run.preamble(args.quick),
      '',
      'The bundled sample, B=32, per-step labels; the compiled train step '
      'over one epoch\'s batches held in memory (median of '
      f'{args.epochs} epochs after an untimed one, packed and dense epochs '
      'interleaved). `lstm`: one LSTM layer '
      'of 32 units (fused kernel on `packed`, the cell step by step through '
      'the resetting wrapper on `dense`); `conv`: the default model. The '
      'last two columns are against `packed` at the same T.',
      '',
      harness.table(['model', 'T', 'mode', 'batches / epoch', 'efficiency',
                    'ms / batch', 's / epoch', 'real steps / s',
                    'per batch vs packed', 'per epoch vs packed'], rows,
                   align='lrlrrrrrrr'),
      '',
      '"per batch vs packed" is what the per-step resets cost: the LSTM '
      'cell stepped through the resetting wrapper, the convolution tap by '
      'tap, the pools\' segmented sums and maxima. "per epoch vs packed" '
      'also counts what `dense` gives back: where it needs fewer batches '
      'for the same real steps (T=128 here) the epoch cost is lower than '
      'the batch cost. On the bundled sample at T=32 both modes need the '
      'same number of batches, because its longest sequence sets it '
      '(section 1).',
  ]
  harness.write_section(harness.output_path(args), 'dense_step_rate',
                       '\n'.join(body))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
