"""5. Chunked stateful evaluation against whole-sequence serving inference.

A model is trained and exported by the StatefulTrainer (``trainer_run.run``,
per-step labels, so that ``serving_default`` returns every step's output),
then every sequence of the data set is run two ways:

* chunked and stateful, as the StatefulEvaluator does: the model rebuilt
  stateful for the eval batches (``models.load_model``), fed the
  ``packed`` batches in order with ``chunked.run_chunked`` (state carried
  across batches, lanes reset where a sequence starts, the labelled steps and
  their losses collected), at T=32 and at T=128;
* whole sequences through the exported SavedModel's ``serving_default``
  signature (``tf.saved_model.load``), 32 sequences per call zero-padded to
  the longest of the call: sorted by length (little padding) and in key
  order (as they come).

Every real step's output (``logits``/``predictions``) is compared:
max |chunked - serving| over all steps of all sequences. Rates are real time
steps per second (warm: each path runs once untimed first).

  PYTHONPATH=. python -m benchmarks.evaluation [--quick]
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from typing import Dict, List

from benchmarks import common

B, TRAIN_T = 32, 32
EVAL_UNROLLS = (32, 128)
REPEATS = 3  # Timed passes of each path; the fastest counts.


def cases(quick: bool):
  seqs, names = common.sample_sequences()
  n = 150 if quick else 300
  out = [('cue (bundled sample)', 'classification',
          {'rnn_type': 'lstm', 'units': [32, 32]}, seqs[:n], names)]
  seqs, names = common.generated_sequences(
      200 if quick else 600, seed=3, target='forecast', median_length=300,
      max_length=3000, short_fraction=0.3, min_length=2)
  out.append(('forecast (variable length)', 'regression',
              {'rnn_type': 'gru', 'units': [32]}, seqs, names))
  return out


def train(work: str, task: str, hp: dict, seqs, names, epochs: int) -> str:
  from components.stateful_trainer import run as trainer_run  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import settings
  trainset, _ = common.split_train_eval(seqs)
  batches = common.write_batches(os.path.join(work, 'train-batches'),
                                 {'train': trainset}, batch_size=B,
                                 num_unroll=TRAIN_T, label_kind='per_step',
                                 feature_names=names)
  model_uri = os.path.join(work, 'model')
  trainer_run.run(trainer_run.TrainerArgs(
      batches_uri=batches, model_uri=model_uri,
      serving_model_dir=os.path.join(model_uri, 'Format-Serving'),
      model_run_dir=os.path.join(work, 'run'), eval_split=None, task=task,
      num_classes=2 if task == 'classification' else None,
      hyperparameters=dict(hp, learning_rate=0.01),
      train=settings.TrainConfig(epochs=epochs, log_every_n_steps=0,
                                 validation_fraction=0.0)))
  return model_uri


class _Timed:
  """Iterates a dataset, noting when each batch is handed out and its real
  steps (``run_chunked`` accepts any iterable of batches)."""

  def __init__(self, dataset):
    self._dataset = dataset
    self.times: List[float] = []
    self.real: List[int] = []

  def __iter__(self):
    for batch in self._dataset:
      self.real.append(int(batch['mask'].numpy().sum()))
      self.times.append(time.perf_counter())
      yield batch


def chunked(model_uri: str, batches: str, num_sequences: int) -> dict:
  """The StatefulEvaluator's chunked pass, timed.

  Returns ``setup`` (loading the model, plus the first batch, which traces
  the step), ``steady`` seconds and real steps of the batches after the
  first, ``bare`` seconds of the compiled predict step alone over the same
  batches held in memory, and every sequence's outputs.
  """
  from components.stateful import objective as objective_lib  # pylint: disable=g-import-not-at-top
  from components.stateful import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import reader  # pylint: disable=g-import-not-at-top
  from components.stateful_evaluator import models as models_lib  # pylint: disable=g-import-not-at-top
  from components.stateful_evaluator import chunked as chunked_lib  # pylint: disable=g-import-not-at-top
  from components.stateful import state  # pylint: disable=g-import-not-at-top
  _, meta = reader.load_metadata(batches, 'eval')
  t0 = time.perf_counter()
  loaded = models_lib.load_model(model_uri, meta)
  objective = objective_lib.make_objective(loaded.spec, loaded.module)
  load_seconds = time.perf_counter() - t0
  passes = []
  for _ in range(REPEATS):
    start = time.perf_counter()
    timed = _Timed(reader.read_batches(batches, 'eval'))
    records = chunked_lib.run_chunked(loaded, timed, objective)
    end = time.perf_counter()
    passes.append((timed.times[1] - start, end - timed.times[1],
                   sum(timed.real[1:])))
  real = int(records.weights.size)
  # The compiled predict step alone, over the batches in memory.
  steps = steps_lib.compile_steps(loaded.model, None, None)
  held = list(reader.read_batches(batches, 'eval'))
  state.zero_all(loaded.model)
  steps.predict(held[0]['features'], held[0]['reset']).numpy()  # Traces.
  bare = math.inf
  for _ in range(REPEATS):
    state.zero_all(loaded.model)
    b0 = time.perf_counter()
    for batch in held:
      out = steps.predict(batch['features'], batch['reset'])
    out.numpy()
    bare = min(bare, time.perf_counter() - b0)
  # Another pass keeps every sequence's outputs for the comparison.
  sampler = chunked_lib.SequenceSampler(num_sequences, 0, loaded.spec.num_unroll)
  chunked_lib.run_chunked(loaded, reader.read_batches(batches, 'eval'), objective,
                sampler)
  first, steady, steady_real = min(passes, key=lambda p: p[1])
  return {'setup': load_seconds + first, 'steady': steady,
          'steady_real': steady_real, 'real': real, 'bare': bare,
          'batches': len(held),
          'outputs': {s.key: s.chunked for s in sampler.sequences()}}


def serving(model_uri: str, seqs, sort: bool) -> dict:
  """Whole sequences through ``serving_default``, ``B`` per call: ``setup``
  (loading the SavedModel and one call), then every call timed."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from components.stateful_evaluator import equivalence as equivalence_lib  # pylint: disable=g-import-not-at-top
  order = sorted(seqs, key=lambda s: s.length) if sort else list(seqs)
  groups = [order[i:i + B] for i in range(0, len(order), B)]
  inputs = [(g, common.padded(g)[0], np.array([s.length for s in g],
                                              np.int64)) for g in groups]
  t0 = time.perf_counter()
  _, fn = equivalence_lib.load_signature(os.path.join(model_uri, 'Format-Serving'),
                           'serving_default')
  run = equivalence_lib.signature_runner(fn)
  run(*inputs[0][1:])  # Warm.
  setup = time.perf_counter() - t0
  seconds = math.inf
  for _ in range(REPEATS):
    t1 = time.perf_counter()
    results = [(g, run(f, n)) for g, f, n in inputs]
    seconds = min(seconds, time.perf_counter() - t1)
  outputs: Dict[str, np.ndarray] = {}
  for g, out in results:
    if out.ndim == 2:  # Regression with K=1 may come as [N, L].
      out = out[..., None]
    for j, s in enumerate(g):
      outputs[s.key] = out[j, :s.length]
  return {'setup': setup, 'steady': seconds,
          'processed': sum(f.shape[0] * f.shape[1] for _, f, _ in inputs),
          'outputs': outputs}


def max_diff(a: Dict, b: Dict) -> float:
  import numpy as np  # pylint: disable=g-import-not-at-top
  if set(a) != set(b):
    raise AssertionError('different sequences compared')
  return max(float(np.max(np.abs(np.asarray(a[k], np.float64) -
                                 np.asarray(b[k], np.float64)))) for k in a)


def main(argv=None) -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  args = common.parser(__doc__.split('\n')[0]).parse_args(argv)
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  run = common.Run()
  work = tempfile.mkdtemp(prefix='tss-bench-eval-')
  rows, bare_rows = [], []
  worst = 0.0
  ratios = []
  bare_ratios = []
  key_ratios = []
  t_ratios = []
  for name, task, hp, seqs, names in cases(args.quick):
    cwork = os.path.join(work, name.split()[0])
    model_uri = train(cwork, task, hp, seqs, names, 1 if args.quick else 3)
    real = sum(s.length for s in seqs)
    serve = {sort: serving(model_uri, seqs, sort) for sort in (True, False)}
    reference = serve[True]['outputs']
    base_rate = real / serve[True]['steady']
    model = f'{hp["rnn_type"].upper()} {hp["units"]}'
    short = name.split()[0]
    key_rate = real / serve[False]['steady']
    for unroll in EVAL_UNROLLS:
      batches = common.write_batches(
          os.path.join(cwork, f'eval-{unroll}'), {'eval': seqs},
          batch_size=B, num_unroll=unroll, label_kind='per_step',
          feature_names=names)
      c = chunked(model_uri, batches, len(seqs))
      assert c['real'] == real, (c['real'], real)
      diff = max_diff(c['outputs'], reference)
      worst = max(worst, diff)
      rate = c['steady_real'] / c['steady']
      ratios.append(rate / base_rate)
      key_ratios.append(rate / key_rate)
      peak = max(float(np.max(np.abs(v))) for v in c['outputs'].values())
      rows.append([short, model, f'chunked stateful (`run_chunked`), '
                   f'T={unroll}, {c["batches"]} batches', f'{real:,}',
                   f'{c["setup"]:.2f}', f'{c["steady"]:.2f}',
                   common.si(rate), common.ratio(rate, base_rate),
                   f'{diff:.2e}', f'{peak:.3g}'])
      bare_rate = real / c['bare']
      bare_ratios.append(bare_rate / rate)
      bare_rows.append([short, model, unroll, c['batches'],
                        f'{c["bare"]:.2f}', f'{c["steady"]:.2f}',
                        common.si(bare_rate), common.si(rate),
                        f'{bare_rate / rate:.2f}x'])
    t_ratios.append((short, ratios[-1] / ratios[-2]))
    for sort in (True, False):
      r = serve[sort]
      rate = real / r['steady']
      diff = max_diff(r['outputs'], reference)
      rows.append([short, model, '`serving_default`, ' + (
          'length-sorted calls (fill ' if sort else 'key-order calls (fill ')
                   + f'{real / r["processed"]:.2f})', f'{real:,}',
                   f'{r["setup"]:.2f}', f'{r["steady"]:.2f}',
                   common.si(rate), common.ratio(rate, base_rate),
                   '(reference)' if sort else f'{diff:.2e}', ''])
    print('\n'.join(str(r) for r in rows[-4:]), file=sys.stderr)
  run.finish()
  body = [
      '## 5. Evaluation: chunked stateful against whole-sequence serving',
      '',
      run.preamble(args.quick),
      '',
      'A model trained and exported by `trainer_run.run` (per-step labels, '
      f'{1 if args.quick else 3} epochs, B={B}, T={TRAIN_T}) is run over '
      'every sequence of its data set: chunked and stateful as the '
      'StatefulEvaluator does (`models_lib.load_model` + `run_chunked` over '
      f'`packed` batches of B={B} read from TFRecords, state carried, the '
      'labelled steps and their losses collected), and whole sequences '
      f'through the exported `serving_default` signature ({B} sequences per '
      'call, each call padded to its longest sequence). "setup" = loading '
      'the model plus the first batch / call (tracing); "steady" = the rest, '
      f'from which the rate is taken (the fastest of {REPEATS} passes). "max abs diff" compares every real '
      'step\'s output with `serving_default` on length-sorted calls; '
      '"max |output|" shows the outputs are not trivially equal.',
      '',
      common.table(['data', 'model', 'path', 'real steps', 'setup s',
                    'steady s', 'real steps/s', 'rate vs serving (sorted)',
                    'max abs diff', 'max abs output'], rows,
                   align='lllrrrrrrr'),
      '',
      'The chunked pass against its own compiled predict step '
      '(`steps.compile_steps(...).predict`) over the same batches held in '
      'memory (no reading, no per-batch bookkeeping):',
      '',
      common.table(['data', 'model', 'T', 'batches', 'bare predict s',
                    'run_chunked steady s', 'bare real steps/s',
                    'run_chunked real steps/s', 'bare / run_chunked'],
                   bare_rows, align='llrrrrrrr'),
      '',
      f'* Equal outputs: largest difference between chunked and '
      f'whole-sequence outputs {worst:.2e} '
      f'{common.verdict(worst <= 1e-5)} (tolerance 1e-5); chunked runs at '
      f'{min(ratios):.2f}x to {max(ratios):.2f}x the rate of length-sorted '
      '`serving_default` calls.',
  ]
  body += [
      f'* Why chunked is slower than length-sorted whole-sequence calls: '
      'each `serving_default` call runs 32 sequences over their whole '
      'length in one compiled loop, with no reading and no per-call '
      'bookkeeping, while `run_chunked` makes one call per batch of '
      'T steps, reads and parses the batches from TFRecords, and after '
      'every batch computes the per-step loss eagerly and collects every '
      'labelled step in Python (per-step labels here: every real step). The '
      'second table isolates that: the compiled predict step alone runs '
      f'{min(bare_ratios):.1f}x to {max(bare_ratios):.1f}x the rate of '
      '`run_chunked`. T=128 against T=32 (a quarter of the calls, more '
      'tail padding): ' + ', '.join(
          f'{name} {r:.2f}x' for name, r in t_ratios) + '. Against `serving_default` on key-order calls '
      '(sequences as they come, each call padded to its longest) the '
      f'chunked pass runs at {min(key_ratios):.2f}x to '
      f'{max(key_ratios):.2f}x their rate.',
  ]
  common.write_section(common.output_path(args), 'evaluation', '\n'.join(body))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
