"""5. Evaluation: the chunked stateful pass against whole-sequence serving,
and the StatefulEvaluator end to end (new TFMA-based against the old one).

Outputs, rates and the compiled predict step alone (``extracts.
write_extracts`` at T=32 and 128 against ``serving_default``); then
``evaluate`` against OLD_COMMIT's, each in a fresh process (BENCHMARKS.md
section 5)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np

from benchmarks import harness
from benchmarks.harness import speed

B, TRAIN_T = 32, 32
EVAL_UNROLLS = (32, 128)
REPEATS = 3  # Timed passes of each path; the fastest counts.

# The evaluator before TFMA; 663bdfd deleted three modules it imports, put
# back into its worktree from RESTORE_FROM.
OLD_COMMIT = '56cdebc'
# Self-contained (the old evaluator loads the copy stored with the weights).
RNN_MODULE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          'rnn_module.py')
RESTORE_FROM = '663bdfd^'
RESTORE = ('config.py', 'metrics.py', 'validation.py')


def cases(quick: bool):
  seqs, names = harness.sample_sequences()
  n = 150 if quick else 300
  out = [('cue (bundled sample)', 'classification',
          {'rnn_type': 'lstm', 'units': [32, 32]}, seqs[:n], names)]
  seqs, names = harness.generated_sequences(200 if quick else 600, seed=3,
                                           **speed.FORECAST)
  out.append(('forecast (variable length)', 'regression',
              {'rnn_type': 'gru', 'units': [32]}, seqs, names))
  return out


def train(work: str, task: str, hp: dict, batches: str, epochs: int) -> tuple:
  """Trains on the ``train`` split of ``batches``; ``(model URI, wall
  seconds of trainer_run.run)``."""
  from components.stateful_trainer import run  # pylint: disable=g-import-not-at-top,unused-import
  model_uri = os.path.join(work, 'model')
  t0 = time.perf_counter()
  harness.run_trainer(
      batches, work, {'epochs': epochs, 'validation_fraction': 0.0,
                      'standardize_labels': False},
      task=task, num_classes=2 if task == 'classification' else None,
      hyperparameters=dict(hp, learning_rate=0.01), module_file=RNN_MODULE)
  return model_uri, time.perf_counter() - t0


class _Timed:
  """Iterates a dataset, noting when each batch is handed out and its real
  steps."""

  def __init__(self, dataset):
    self._dataset = dataset
    self.times: List[float] = []
    self.real: List[int] = []

  def __iter__(self):
    for batch in self._dataset:
      self.real.append(int(batch['mask'].numpy().sum()))
      self.times.append(time.perf_counter())
      yield batch


@contextlib.contextmanager
def _timed_reader(extracts_lib, seen: List[_Timed]):
  """``write_extracts`` reads the batches itself: its reader is swapped for
  one that hands out ``_Timed`` datasets while the block runs."""
  real = extracts_lib.sb_reader

  class _Reader:

    @staticmethod
    def read_batches(uri, split):
      timed = _Timed(real.read_batches(uri, split))
      seen.append(timed)
      return timed

  extracts_lib.sb_reader = _Reader
  try:
    yield
  finally:
    extracts_lib.sb_reader = real


def chunked(model_uri: str, batches: str, train_batches: str,
            num_sequences: int, out_dir: str) -> dict:
  """The StatefulEvaluator's chunked pass (``extracts.write_extracts``),
  timed.

  Returns ``setup`` (loading the model, plus the first batch, which traces
  the step), ``steady`` seconds and real steps of the batches after the
  first, ``bare`` seconds of the compiled predict step alone over the same
  batches held in memory, the examples written and every sequence's
  outputs.
  """
  from components.stateful import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from components.sequence_batcher import reader  # pylint: disable=g-import-not-at-top
  from components.stateful_evaluator.extraction import models as models_lib  # pylint: disable=g-import-not-at-top
  from components.stateful_evaluator.extraction import chunked as chunked_lib  # pylint: disable=g-import-not-at-top
  from components.stateful_evaluator.extraction import extracts as extracts_lib  # pylint: disable=g-import-not-at-top
  from components.stateful.state import protocol as state  # pylint: disable=g-import-not-at-top
  _, meta = reader.load_metadata(batches, 'eval')
  t0 = time.perf_counter()
  loaded = models_lib.load_model(model_uri, meta)
  load_seconds = time.perf_counter() - t0
  no_skill = extracts_lib.NoSkill.from_batches(train_batches, 'train',
                                               loaded.spec)
  passes = []
  for _ in range(REPEATS):
    seen: List[_Timed] = []
    with _timed_reader(extracts_lib, seen):
      start = time.perf_counter()
      stats = extracts_lib.write_extracts(loaded, None, batches, 'eval',
                                          no_skill, out_dir)
      end = time.perf_counter()
    timed = seen[0]
    passes.append((timed.times[1] - start, end - timed.times[1],
                   sum(timed.real[1:])))
  # The compiled predict step alone, over the batches in memory.
  steps = steps_lib.compile_steps(loaded.model, None, None)
  held = list(reader.read_batches(batches, 'eval'))
  state.zero_all(loaded.model)
  steps.predict(held[0]['features'], held[0]['reset']).numpy()  # Traces.
  bare = min(speed.held_epoch(loaded.model, lambda b: steps.predict(
      b['features'], b['reset']), held) for _ in range(REPEATS))
  # Another pass keeps every sequence's outputs for the comparison.
  sampler = chunked_lib.SequenceSampler(num_sequences, 0,
                                        loaded.spec.num_unroll)
  extracts_lib.write_extracts(loaded, None, batches, 'eval', no_skill,
                              out_dir, sampler)
  first, steady, steady_real = min(passes, key=lambda p: p[1])
  return {'setup': load_seconds + first, 'steady': steady,
          'steady_real': steady_real, 'real': stats.labelled_steps,
          'examples': stats.examples,
          'extract_bytes': os.path.getsize(stats.path), 'bare': bare,
          'batches': len(held),
          'outputs': {s.key: s.chunked for s in sampler.sequences()}}


# Run as ``python child.py '<json>'`` with PYTHONPATH at this checkout (new
# evaluator) or at the OLD_COMMIT worktree (old one); prints one JSON line.
_CHILD = r'''
import inspect, json, os, resource, sys, time
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
import tensorflow as tf
from components.stateful_evaluator import evaluation as ev
res = {'import': time.perf_counter() - t0}
if 'output_dir' in inspect.signature(ev.evaluate).parameters:
  import apache_beam as beam
  spent = {}

  class TimedPipeline(beam.Pipeline):
    # Notes how long the pipeline runs (its construction is the rest).
    def run(self, *a, **k):
      t = time.perf_counter()
      result = super().run(*a, **k)
      result.wait_until_finish()
      spent['run'] = spent.get('run', 0.0) + time.perf_counter() - t
      return result

  t = time.perf_counter()
  outcome = ev.evaluate(model_uri=args['model'], batches_uri=args['batches'],
                        split='eval', output_dir=args['out'],
                        serving_dir=args['serving'],
                        make_pipeline=TimedPipeline)
  res['evaluate'] = time.perf_counter() - t
  res['beam_run'] = spent.get('run')
  doc = outcome.document
  res.update(total=doc['seconds']['total'],
             chunked=doc['seconds']['chunked_pass'],
             tfma=doc['seconds']['tfma'], examples=doc['extracts']['examples'],
             steps=doc['extracts']['labelled_steps'],
             sequences=doc['extracts']['sequences'],
             blessed=outcome.blessed, metric=doc['primary_metric'],
             value=doc['no_skill']['gate']['candidate'],
             runner=doc['tfma'].get('runner', 'beam'))
  if args.get('tfma_parts'):
    from components.stateful import model_spec as ms
    from components.stateful_evaluator.extraction import extracts as ex
    from components.stateful_evaluator.analysis import config as tfma_config
    from components.stateful_evaluator.analysis import beam_run
    spec = ms.ModelSpec.from_dict(doc['model']['spec'])
    config = tfma_config.complete_config(None, spec, False)
    path = os.path.join(args['out'], ex.EXTRACTS_FILE)
    small = os.path.join(args['out'] + '-small', ex.EXTRACTS_FILE)
    tf.io.gfile.makedirs(os.path.dirname(small))
    opts = tf.io.TFRecordOptions(compression_type='GZIP')
    with tf.io.TFRecordWriter(small, options=opts) as w:
      for i, rec in enumerate(tf.data.TFRecordDataset(
          path, compression_type='GZIP')):
        if i >= 16:
          break
        w.write(rec.numpy())
    spent.clear()
    t = time.perf_counter()
    beam_run.run(small, config, args['out'] + '-small-tfma', TimedPipeline)
    res['tfma_small'] = time.perf_counter() - t
    res['tfma_small_run'] = spent.get('run')
    t = time.perf_counter()
    beam_run.run(path, config, args['out'] + '-again')
    res['tfma_again'] = time.perf_counter() - t
    from components.stateful_evaluator.analysis import in_process as tfma_in_process
    t = time.perf_counter()
    tfma_in_process.run(path, config, args['out'] + '-in-process')
    res['tfma_in_process'] = time.perf_counter() - t
else:
  from components.stateful_evaluator import config as config_lib
  spent = [0.0]
  inner = ev._evaluate_one
  def timed(*a, **k):
    t = time.perf_counter()
    try:
      return inner(*a, **k)
    finally:
      spent[0] += time.perf_counter() - t
  ev._evaluate_one = timed
  t = time.perf_counter()
  outcome = ev.evaluate(model_uri=args['model'], batches_uri=args['batches'],
                        split='eval', config=config_lib.EvalConfig(),
                        serving_dir=args['serving'])
  res['evaluate'] = time.perf_counter() - t
  doc = outcome.metrics
  res.update(total=doc['seconds'], chunked=spent[0], blessed=outcome.blessed,
             metric=doc['primary_metric'])
  cand = doc['metrics']['candidate']
  overall = cand.get('overall') or cand.get('all') or next(iter(cand.values()))
  res['value'] = overall.get(doc['primary_metric'])
  res['overall'] = {k: v for k, v in overall.items()
                    if isinstance(v, (int, float))}
res['maxrss'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
# ru_maxrss survives exec on Linux: it can be the forking parent's RSS.
# VmHWM is the high-water mark of this process's own memory.
with open('/proc/self/status') as f:
  for line in f:
    if line.startswith('VmHWM:'):
      res['vmhwm'] = int(line.split()[1]) * 1024
print(json.dumps(res))
'''


@contextlib.contextmanager
def old_worktree(work: str):
  """A git worktree of OLD_COMMIT (with the RESTORE modules put back);
  removed on exit. Yields ``(path, restored module names)``."""
  path = os.path.join(work, 'old-evaluator')
  subprocess.run(['git', 'worktree', 'add', '--detach', path, OLD_COMMIT],
                 cwd=harness.ROOT, check=True, capture_output=True)
  try:
    restored = []
    for name in RESTORE:
      rel = f'components/stateful_evaluator/{name}'
      target = os.path.join(path, rel)
      if not os.path.exists(target):
        text = subprocess.run(['git', 'show', f'{RESTORE_FROM}:{rel}'],
                              cwd=harness.ROOT, check=True,
                              capture_output=True, text=True).stdout
        with open(target, 'w') as f:
          f.write(text)
        restored.append(name)
    yield path, restored
  finally:
    subprocess.run(['git', 'worktree', 'remove', '--force', path],
                   cwd=harness.ROOT, check=False)


def evaluate_in_child(script: str, tree: str, model_uri: str, batches: str,
                      out: str, tfma_parts: bool = False) -> dict:
  """One evaluation in a fresh process with PYTHONPATH=tree; its JSON line
  plus ``wall`` (the whole process) and ``tree_peak`` (polled RSS)."""
  env = harness.child_env()
  env['PYTHONPATH'] = tree
  args = {'model': model_uri, 'batches': batches, 'out': out,
          'serving': os.path.join(model_uri, 'Format-Serving'),
          'tfma_parts': tfma_parts}
  r = harness.run_child([sys.executable, script, json.dumps(args)], cwd=tree,
                       env=env, timeout=1800)
  res = r.json()
  if r.returncode != 0 or res is None:
    raise RuntimeError(f'evaluation in {tree} failed ({r.returncode}, '
                       f'{r.killed}):\n{r.stderr[-3000:]}')
  res['wall'] = r.seconds
  res['tree_peak'] = r.peak.tree
  print(f'{tree}: {res}', file=sys.stderr, flush=True)
  return res


def _trained_set(work, key, name, task, hp, label_kind, splits, names,
                 epochs, labelled) -> dict:
  """Batches of ``splits`` and a model trained on them, as one e2e set."""
  batches = harness.write_batches(
      os.path.join(work, f'{key}-batches'), splits, batch_size=B,
      num_unroll=TRAIN_T, label_kind=label_kind, feature_names=names)
  uri, train_s = train(os.path.join(work, key), task, hp, batches, epochs)
  return {'name': name, 'model': f'{hp["rnn_type"].upper()} {hp["units"]}',
          'batches': batches, 'uri': uri,
          'train_s': train_s,
          'train_steps': sum(s.length for s in splits['train']),
          'eval_seqs': len(splits['eval']),
          'eval_steps': sum(s.length for s in splits['eval']),
          'labelled': labelled}


def end_to_end(work: str, quick: bool) -> dict:
  """Trains the three models, writes the batches and runs the evaluators."""
  epochs = 1 if quick else 3
  # Per-sequence classification: cue, one labelled step per sequence.
  seqs, names = harness.generated_sequences(
      150 if quick else 900, seed=11, target='cue')
  trainset, evalset = harness.split_train_eval(seqs, every=3)
  cls = _trained_set(work, 'cls', 'cue, per-sequence classification',
                     'classification', {'rnn_type': 'lstm', 'units': [32, 32]},
                     'per_sequence',
                     {'train': trainset, 'eval': evalset}, names, epochs,
                     len(evalset))
  # Per-step regression: forecast, every real step labelled; ~200k eval steps.
  fore = speed.FORECAST
  seqs, names = harness.generated_sequences(80 if quick else 1200, seed=7,
                                           **fore)
  trainset, evalset = harness.split_train_eval(seqs, every=2)
  labelled = sum(s.length for s in evalset)
  reg = _trained_set(work, 'reg', 'forecast, per-step regression',
                     'regression', {'rnn_type': 'gru', 'units': [32]}, 'per_step',
                     {'train': trainset, 'eval': evalset}, names, epochs,
                     labelled)
  # Per-step classification (tagging): the same streams, each step's class
  # the sign of its next value.
  tag = _trained_set(
      work, 'tag', 'sign of the next value, per-step classification',
      'classification', {'rnn_type': 'gru', 'units': [32]}, 'per_step',
      {name: [dataclasses.replace(s, labels=(s.labels > 0).astype(np.int64))
              for s in split]
       for name, split in (('train', trainset), ('eval', evalset))},
      names, epochs, labelled)
  reg_model = reg['uri']
  # Memory: the regression model on N and 4N eval sequences (per step).
  pool, _ = harness.generated_sequences(40 if quick else 1200, seed=5, **fore)
  sizes = []
  for n in (len(pool) // 4, len(pool)):
    sizes.append({'seqs': n, 'steps': sum(s.length for s in pool[:n]),
                  'batches': harness.write_batches(
                      os.path.join(work, f'mem-{n}'),
                      {'train': trainset, 'eval': pool[:n]}, batch_size=B,
                      num_unroll=TRAIN_T, label_kind='per_step',
                      feature_names=names)})
  script = os.path.join(work, 'evaluate_child.py')
  with open(script, 'w') as f:
    f.write(_CHILD)
  results = {'sets': [cls, reg, tag], 'memory': sizes}
  with old_worktree(work) as (old_tree, restored):
    results['restored'] = restored
    for i, case in enumerate((cls, reg, tag)):
      case['new'] = evaluate_in_child(script, harness.ROOT, case['uri'],
                                      case['batches'],
                                      os.path.join(work, f'eval-new-{i}'),
                                      tfma_parts=True)
      # The old evaluator is compared on the first two sets only.
      case['old'] = None if case is tag else evaluate_in_child(
          script, old_tree, case['uri'], case['batches'],
          os.path.join(work, f'eval-old-{i}'))
    for size in sizes:
      n = size['seqs']
      size['new'] = evaluate_in_child(script, harness.ROOT, reg_model,
                                      size['batches'],
                                      os.path.join(work, f'mem-new-{n}'))
      size['old'] = evaluate_in_child(script, old_tree, reg_model,
                                      size['batches'],
                                      os.path.join(work, f'mem-old-{n}'))
  return results


def serving(model_uri: str, seqs, sort: bool) -> dict:
  """Whole sequences through ``serving_default``, ``B`` per call: ``setup``
  (loading the SavedModel and one call), then every call timed."""
  from components.stateful_evaluator.checks import equivalence as equivalence_lib  # pylint: disable=g-import-not-at-top
  order = sorted(seqs, key=lambda s: s.length) if sort else list(seqs)
  groups = [order[i:i + B] for i in range(0, len(order), B)]
  inputs = [(g, harness.padded(g)[0], np.array([s.length for s in g],
                                              np.int64)) for g in groups]
  t0 = time.perf_counter()
  served = equivalence_lib.ServedModel(os.path.join(model_uri,
                                                   'Format-Serving'))
  run = served.runner('serving_default')
  run(*inputs[0][1:])  # Warm.
  setup = time.perf_counter() - t0
  seconds = math.inf
  for _ in range(REPEATS):
    t1 = time.perf_counter()
    results = [(g, run(f, n)) for g, f, n in inputs]
    seconds = min(seconds, time.perf_counter() - t1)
  served.close()
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
  if set(a) != set(b):
    raise AssertionError('different sequences compared')
  return max(float(np.max(np.abs(np.asarray(a[k], np.float64) -
                                 np.asarray(b[k], np.float64)))) for k in a)


def main(argv=None) -> int:
  args = harness.parser(__doc__.split('\n')[0]).parse_args(argv)
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  run = harness.Run()
  work = tempfile.mkdtemp(prefix='tss-bench-eval-')
  rows, bare_rows = [], []
  worst = 0.0
  ratios = []
  bare_ratios = []
  key_ratios = []
  t_ratios = []
  epochs = 1 if args.quick else 3
  for name, task, hp, seqs, names in cases(args.quick):
    cwork = os.path.join(work, name.split()[0])
    trainset, _ = harness.split_train_eval(seqs)
    train_batches = harness.write_batches(
        os.path.join(cwork, 'train-batches'), {'train': trainset},
        batch_size=B, num_unroll=TRAIN_T, label_kind='per_step',
        feature_names=names)
    model_uri, _ = train(cwork, task, hp, train_batches, epochs)
    real = sum(s.length for s in seqs)
    serve = {sort: serving(model_uri, seqs, sort) for sort in (True, False)}
    reference = serve[True]['outputs']
    base_rate = real / serve[True]['steady']
    model = f'{hp["rnn_type"].upper()} {hp["units"]}'
    short = name.split()[0]
    key_rate = real / serve[False]['steady']
    for unroll in EVAL_UNROLLS:
      batches = harness.write_batches(
          os.path.join(cwork, f'eval-{unroll}'), {'eval': seqs},
          batch_size=B, num_unroll=unroll, label_kind='per_step',
          feature_names=names)
      c = chunked(model_uri, batches, train_batches, len(seqs),
                  os.path.join(cwork, f'extracts-{unroll}'))
      assert c['real'] == real, (c['real'], real)
      diff = max_diff(c['outputs'], reference)
      worst = max(worst, diff)
      rate = c['steady_real'] / c['steady']
      ratios.append(rate / base_rate)
      key_ratios.append(rate / key_rate)
      peak = max(float(np.max(np.abs(v))) for v in c['outputs'].values())
      rows.append([short, model, f'chunked stateful (`write_extracts`), '
                   f'T={unroll}, {c["batches"]} batches, '
                   f'{c["examples"]:,} examples ({c["extract_bytes"] / 2**20:.1f} MiB gzip)',
                   f'{real:,}',
                   f'{c["setup"]:.2f}', f'{c["steady"]:.2f}',
                   harness.si(rate), harness.ratio(rate, base_rate),
                   f'{diff:.2e}', f'{peak:.3g}'])
      bare_rate = real / c['bare']
      bare_ratios.append(bare_rate / rate)
      bare_rows.append([short, model, unroll, c['batches'],
                        f'{c["bare"]:.2f}', f'{c["steady"]:.2f}',
                        harness.si(bare_rate), harness.si(rate),
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
                   harness.si(rate), harness.ratio(rate, base_rate),
                   '(reference)' if sort else f'{diff:.2e}', ''])
    print('\n'.join(str(r) for r in rows[-4:]), file=sys.stderr)
  e2e = end_to_end(os.path.join(work, 'e2e'), args.quick)
  run.finish()
  harness.write_report(
      args, 'evaluation',
      '## 5. Evaluation: chunked stateful against whole-sequence serving; '
      'the evaluator end to end',
      run.preamble(args.quick),
      f'A model exported by `trainer_run.run` ({epochs} epochs, B={B}, '
      f'T={TRAIN_T}) over every sequence: chunked and stateful '
      '(`write_extracts` over `packed` batches) and whole through '
      f'`serving_default` ({B} per call). "setup" = loading plus the first '
      f'batch; "steady" = the rest (fastest of {REPEATS} passes); "max abs '
      'diff" against length-sorted `serving_default`.',
      harness.table(['data', 'model', 'path', 'real steps', 'setup s',
                    'steady s', 'real steps/s', 'rate vs serving (sorted)',
                    'max abs diff', 'max abs output'], rows,
                   align='lllrrrrrrr'),
      'The chunked pass against its compiled predict step alone over the '
      'batches in memory:',
      harness.table(['data', 'model', 'T', 'batches', 'bare predict s',
                    'write_extracts steady s', 'bare real steps/s',
                    'write_extracts real steps/s',
                    'bare / write_extracts'],
                   bare_rows, align='llrrrrrrr'),
      [f'* Equal outputs: largest difference between chunked and '
       f'whole-sequence outputs {worst:.2e} '
       f'{harness.verdict(worst <= 1e-5)} (tolerance 1e-5); chunked runs at '
       f'{min(ratios):.2f}x to {max(ratios):.2f}x the rate of length-sorted '
       '`serving_default` calls.',
       f'* The compiled predict step alone runs {min(bare_ratios):.1f}x to '
       f'{max(bare_ratios):.1f}x the rate of `write_extracts`; T=128 against '
       'T=32: ' + ', '.join(f'{name} {r:.2f}x' for name, r in t_ratios) +
       f'; against key-order `serving_default` calls: '
       f'{min(key_ratios):.2f}x to {max(key_ratios):.2f}x.'],
      *e2e_section(e2e, epochs))
  return 0


def e2e_section(e2e: dict, epochs: int) -> List[str]:
  """The end-to-end and memory tables and their bullet points."""
  rows, where = [], []
  for case in e2e['sets']:
    new, old = case['new'], case['old']
    other = new['total'] - new['chunked'] - new['tfma']
    rows.append([
        case['name'], case['model'], f'{case["eval_seqs"]:,}',
        f'{case["labelled"]:,}', f'{new["examples"]:,}',
        f'{case["train_s"]:.1f} ({epochs} ep. x {case["train_steps"]:,} steps)',
        f'{old["evaluate"]:.1f} ({old["chunked"]:.1f})' if old else 'n/a',
        f'{new["evaluate"]:.1f}', f'{new["chunked"]:.1f}',
        f'{new["tfma"]:.1f} ({new["tfma"] / new["total"]:.0%})',
        f'{other:.1f}',
        harness.ratio(new['evaluate'], old['evaluate']) if old else 'n/a',
        harness.ratio(new['evaluate'], case['train_s'])])
    where.append([
        case['name'],
        f'{old["import"]:.1f} / {new["import"]:.1f}' if old else
        f'n/a / {new["import"]:.1f}',
        f'{old["wall"]:.1f} / {new["wall"]:.1f}' if old else
        f'n/a / {new["wall"]:.1f}',
        new['runner'].replace('_', ' '),
        f'{new["tfma_small"]:.1f} ({new["tfma_small_run"]:.1f})',
        f'{new["tfma_again"]:.1f}', f'{new["tfma_in_process"]:.1f}',
        f'{_num(_old_value(old or {}, new["metric"]))} / '
        f'{_num(new["value"])} ({new["metric"]})'])
  cls, reg, tag = e2e['sets']
  cls_ratio = cls['new']['evaluate'] / cls['old']['evaluate']
  reg_ratio = reg['new']['evaluate'] / reg['train_s']
  tag_ratio = tag['new']['evaluate'] / tag['train_s']
  cls_train_ratio = cls['new']['evaluate'] / cls['train_s']
  mem_rows = []
  small, large = e2e['memory']
  for label, key in (('old (NumPy over all labelled steps)', 'old'),
                     ('new (`write_extracts` + TFMA)', 'new')):
    a, b = small[key]['vmhwm'], large[key]['vmhwm']
    mem_rows.append([label, harness.mib(a), harness.mib(b),
                     f'{(b - a) / 2**20:+,.0f} MiB', harness.ratio(b, a),
                     f'{harness.mib(small[key]["maxrss"])} / '
                     f'{harness.mib(large[key]["maxrss"])}',
                     f'{small[key]["evaluate"]:.1f} / '
                     f'{large[key]["evaluate"]:.1f}'])
  restored = e2e.get('restored') or []
  return [
      '### The evaluator end to end: new (TFMA) against old (NumPy)',
      f'`evaluation.evaluate` against the evaluator of `{OLD_COMMIT}` (a '
      'git worktree' + (f', {", ".join(restored)} put back from '
                        f'`{RESTORE_FROM}`' if restored else '') +
      ') on the same model and batches, each in a fresh process; "other" = '
      'loading, the no-skill fit, the chunked == whole check, reading '
      'results back. The old evaluator does not run the third set.',
      harness.table(['set', 'model', 'eval seqs', 'labelled steps',
                    'extracts', 'trainer s', 'old evaluate s (chunked pass)',
                    'new evaluate s', 'new: chunked pass s', 'new: TFMA s '
                    '(share)', 'new: other s', 'new / old',
                    'new / trainer'], rows, align='llrrrrrrrrrrr'),
      'Where TFMA\'s time goes, after `evaluate` in the same process: on '
      'Beam over 16 extracts (its fixed cost; `Pipeline.run` in brackets) '
      'and over all (warm), and in process over all.',
      harness.table(['set', 'import s (old / new)',
                    'process wall s (old / new)',
                    'TFMA runner in evaluate',
                    'TFMA on Beam, 16 extracts s (Beam run)',
                    'TFMA on Beam, all extracts s',
                    'TFMA in process, all extracts s',
                    'headline metric, old / new'], where,
                   align='lrrlrrrl'),
      f'Peak memory of one evaluation of the per-step regression model on '
      f'{small["seqs"]:,} and {large["seqs"]:,} eval sequences '
      f'({small["steps"]:,} and {large["steps"]:,} labelled steps): the '
      'child\'s `VmHWM`; `ru_maxrss` survives `exec`, so it can be the '
      'parent\'s:',
      harness.table(['evaluator', f'VmHWM, {small["seqs"]:,} seqs',
                    f'VmHWM, {large["seqs"]:,} seqs', 'growth',
                    'large / small', 'ru_maxrss (small / large)',
                    'evaluate s (small / large)'],
                   mem_rows, align='lrrrrrr'),
      f'* Targets: the evaluator at most half the trainer\'s time, in the '
      f'same run: per-sequence set {cls["new"]["evaluate"]:.1f} s against '
      f'{cls["train_s"]:.1f} s ({cls_train_ratio:.2f}x) '
      f'{harness.verdict(cls_train_ratio <= 0.5)}; per-step set of '
      f'{reg["labelled"]:,} labelled steps {reg["new"]["evaluate"]:.1f} s '
      f'against {reg["train_s"]:.1f} s ({reg_ratio:.2f}x) '
      f'{harness.verdict(reg_ratio <= 0.5)}; per-step classification set of '
      f'{tag["labelled"]:,} labelled steps ({tag["new"]["examples"]:,} '
      f'extracts) {tag["new"]["evaluate"]:.1f} s against '
      f'{tag["train_s"]:.1f} s ({tag_ratio:.2f}x) '
      f'{harness.verdict(tag_ratio <= 0.5)} (target: at most 0.5x). Against '
      f'the old in-memory evaluator (per-sequence set): {cls_ratio:.2f}x.',
  ]


def _old_value(old: dict, metric: str):
  """The old evaluator's value of the new one's headline metric (its
  accuracy; its RMSE squared for MSE)."""
  overall = old.get('overall') or {}
  if metric == 'mean_squared_error':
    rmse = overall.get('rmse')
    return None if rmse is None else rmse * rmse
  return overall.get('accuracy' if metric == 'sparse_categorical_accuracy'
                     else metric)


def _num(value) -> str:
  return 'n/a' if value is None else f'{float(value):.4g}'


if __name__ == '__main__':
  raise SystemExit(main())
