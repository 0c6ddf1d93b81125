"""14. The default model's feature pass against NumPy and the arithmetic bound.

On the bundled sample as the main job lays it out: ``adapt``, the feature
pass, a fine-tuning pass, the NumPy reference (``reference_features``) and
the matmul bound, timed in interleaved rounds; ``--baseline-tree DIR`` also
measures that checkout in alternating children and compares their logits
bit for bit (BENCHMARKS.md section 14).

  PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 python -m benchmarks.feature_pass \\
      [--baseline-tree DIR] [--pairs 2] [--rounds 3] [--quick]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from benchmarks import harness
from benchmarks.harness import recorded

SECTION = 'feature_pass'
TITLE = ("## 14. The default model's feature pass against NumPy and the "
         'arithmetic bound')
# The main job's layout on the bundled sample (the batcher's choice there).
B, T = 8, 32
# The targets (issue 48): the feature pass at least this share of
# the NumPy reference's rate, ``adapt`` at most this many feature passes.
TARGET_RATE_SHARE = 0.5
TARGET_ADAPT_PASSES = 2.0
# Model outputs the reference knows (the per-sequence default model's).
REFERENCE_PARTS = ('conv_pool', 'input_pool', 'onset_')


# --------------------------------------------------------------------------
# The NumPy reference
# --------------------------------------------------------------------------


def lane_streams(batches: Sequence[Mapping[str, np.ndarray]]):
  """The batches as one stream per lane: ``features`` float32[B, S, F] and
  ``start`` int64[B, S], the stream index of the first step of the sequence
  each step belongs to (a ``packed`` reset starts one at its batch's first
  step, a ``dense`` one at its step)."""
  x = np.concatenate([np.asarray(b['features'], np.float32)
                      for b in batches], axis=1)
  lanes, steps = x.shape[:2]
  reset = np.zeros((lanes, steps), bool)
  at = 0
  for b in batches:
    r = np.asarray(b['reset'])
    length = np.asarray(b['features']).shape[1]
    if r.ndim == 2:
      reset[:, at:at + length] = r > 0
    else:
      reset[:, at] = r > 0
    at += length
  reset[:, 0] = True
  index = np.broadcast_to(np.arange(steps), (lanes, steps))
  start = np.maximum.accumulate(np.where(reset, index, 0), axis=1)
  return x, start


def model_params(model) -> Dict[str, Any]:
  """What the reference reads from a (stateful or serving) default conv
  model: the input scale, the kernels per dilation, the PPV thresholds, the
  onset windows. Raises ValueError for a model with other features (the
  per-step default model's decaying pools, current outputs and lags)."""
  feats = model.get_layer('features_all')
  parts = [t._keras_history.layer.name for t in feats.input]  # pylint: disable=protected-access
  if len(parts) != 2 + 3 or not all(any(p.startswith(k) for k in
                                        REFERENCE_PARTS) for p in parts):
    raise ValueError(f'the reference computes the per-sequence default '
                     f'model\'s features only, not {parts}')
  convs = sorted((l for l in model.layers if l.name.startswith('conv_d')),
                 key=lambda l: l.dilation_rate)
  scale = model.get_layer('input_scale')
  pool = model.get_layer('conv_pool')
  if tuple(pool.stats) != ('ppv',):
    raise ValueError(f'the reference computes conv_stats=("ppv",) only, '
                     f'not {pool.stats}')
  return {
      'center': scale.center.numpy(), 'scale': scale.scale.numpy(),
      'kernels': [(l.dilation_rate, l.kernel.numpy()) for l in convs],
      'thresholds': pool.threshold.numpy(),
      'onsets': [model.get_layer(p).head_steps for p in parts
                 if p.startswith('onset_')]}


def _since_start(values: np.ndarray, start: np.ndarray,
                 dtype=None) -> np.ndarray:
  """Running sums along axis 0 from each step's sequence start."""
  total = np.cumsum(values, axis=0, dtype=dtype)
  before = np.where((start > 0)[:, None], total[np.maximum(start - 1, 0)],
                    0)
  return total - before


def _conv(x: np.ndarray, start: np.ndarray, dilation: int,
          kernel: np.ndarray, exact_taps: bool) -> np.ndarray:
  """A causal dilated convolution of one stream ``x`` [S, C] (taps before
  a sequence's start read zeros): one matrix product of the taps [S, k * C]
  (tap-major) with the kernel; ``exact_taps``: the products summed one at
  a time in float32, tap-major then channel (the model's order and bits)."""
  k, c, _ = kernel.shape
  t = np.arange(x.shape[0])
  taps = []
  for j in range(k):
    idx = t - (k - 1 - j) * dilation
    taps.append(np.where((idx >= start)[:, None], x[np.maximum(idx, 0)],
                         np.float32(0)))
  cols = np.concatenate(taps, axis=1)
  rows = kernel.reshape(k * c, -1)
  if not exact_taps:
    return cols @ rows
  out = np.zeros((x.shape[0], rows.shape[1]), np.float32)
  for i in range(k * c):
    out += cols[:, i:i + 1] * rows[i]
  return out


def reference_features(params: Mapping[str, Any], x: np.ndarray,
                       start: np.ndarray, exact_taps: bool = False,
                       conv_out: Optional[list] = None) -> np.ndarray:
  """The default conv model's ``features_all`` at every step of one lane's
  stream ``x`` float32[S, F] (``start`` from ``lane_streams``), float32
  [S, D]. ``conv_out``: a list that receives the convolution outputs."""
  z = ((x - params['center']) / params['scale']).astype(np.float32)
  xs = (np.sign(z) * np.log1p(np.abs(z))).astype(np.float32)
  h = np.concatenate([_conv(xs, start, d, w, exact_taps)
                      for d, w in params['kernels']], axis=1)
  if conv_out is not None:
    conv_out.append(h)
  count = (np.arange(x.shape[0]) - start + 1)[:, None]
  thresholds = params['thresholds']
  copies = thresholds.shape[0] // h.shape[1]
  above = np.concatenate([h > thresholds[i * h.shape[1]:(i + 1) * h.shape[1]]
                          for i in range(copies)], axis=1)
  # Counts: integers, exact in float32.
  ppv = _since_start(above, start, np.float32) / count.astype(np.float32)
  signed = np.concatenate([xs, -xs], axis=1).astype(np.float64)
  mean = _since_start(signed, start) / count
  sequence = np.cumsum(start == np.arange(x.shape[0]))[:, None]
  offset = 2.0 * np.abs(signed).max() + 1.0  # Later sequences above.
  running = np.maximum.accumulate(signed + sequence * offset, axis=0)
  peak = running - sequence * offset
  onsets = [_since_start(xs * (count <= w), start) / np.minimum(count, w)
            for w in params['onsets']]
  return np.concatenate([ppv, mean, peak] + onsets, axis=1).astype(
      np.float32)


def reference_pass(params: Mapping[str, Any],
                   batches: Sequence[Mapping[str, np.ndarray]]) -> int:
  """The reference over every lane of ``batches`` (the timed pass);
  returns the feature width."""
  x, start = lane_streams(batches)
  width = 0
  for lane in range(x.shape[0]):
    width = reference_features(params, x[lane], start[lane]).shape[1]
  return width


def agreement(params, batches, model_lanes: np.ndarray,
              conv_lanes: np.ndarray, lanes: int = 2) -> Dict[str, float]:
  """How the reference agrees with the model's features ``model_lanes``
  [lanes, S, D] and convolution outputs ``conv_lanes`` [lanes, S, H] on the
  first ``lanes`` lanes: the largest absolute differences (matrix-product
  convolutions; with ``exact_taps``, every feature)."""
  x, start = lane_streams(batches)
  out = {'conv_max_abs': 0.0, 'conv_max_rel': 0.0, 'exact_max_abs': 0.0,
         'exact_equal_share': 1.0, 'fast_ppv_mismatch_share': 0.0}
  width = model_lanes.shape[-1]
  for lane in range(lanes):
    convs: list = []
    fast = reference_features(params, x[lane], start[lane], conv_out=convs)
    exact = reference_features(params, x[lane], start[lane],
                               exact_taps=True)
    diff = np.abs(convs[0] - conv_lanes[lane])
    out['conv_max_abs'] = max(out['conv_max_abs'], float(diff.max()))
    out['conv_max_rel'] = max(out['conv_max_rel'], float(
        (diff / np.maximum(np.abs(conv_lanes[lane]), 1.0)).max()))
    out['exact_max_abs'] = max(out['exact_max_abs'], float(
        np.abs(exact - model_lanes[lane]).max()))
    out['exact_equal_share'] = min(out['exact_equal_share'], float(
        np.mean(exact == model_lanes[lane])))
    ppv = params['thresholds'].shape[0]
    out['fast_ppv_mismatch_share'] = max(
        out['fast_ppv_mismatch_share'],
        float(np.mean(fast[:, :ppv] != model_lanes[lane][:, :ppv])))
  out['width'] = int(width)
  return out


# --------------------------------------------------------------------------
# The measurement (one process, one checkout)
# --------------------------------------------------------------------------


def write_sample_batches(root: str) -> str:
  """The bundled sample's train and eval batches under ``root``."""
  seqs, names = harness.sample_sequences()
  train, evals = harness.split_train_eval(seqs)
  return harness.write_batches(root, {'train': train, 'eval': evals},
                              batch_size=B, num_unroll=T,
                              label_kind='per_sequence', feature_names=names)


def macs_per_step(params: Mapping[str, Any]) -> Dict[str, int]:
  """Multiply-adds (the convolutions) and other element operations (a
  compare, an add and a divide per PPV; the input pools) per step."""
  conv = sum(int(np.prod(w.shape)) for _, w in params['kernels'])
  features = int(params['thresholds'].shape[0])
  return {'conv_macs': conv, 'pool_ops': 3 * features}


def matmul_rate(seconds: float = 1.0, n: int = 1024) -> float:
  """float32 multiply-adds per second of ``tf.linalg.matmul`` [n, n]^2."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  a = tf.random.normal([n, n])
  b = tf.random.normal([n, n])
  tf.linalg.matmul(a, b).numpy()
  runs, started = 0, time.perf_counter()
  while time.perf_counter() - started < seconds:
    out = tf.linalg.matmul(a, b)
    runs += 1
  out.numpy()
  return runs * n ** 3 / (time.perf_counter() - started)


def _core(path: str, old_path: str):
  """The module at ``path``, or at ``old_path`` in a checkout from before
  the core moved (``components/stateful/compat.py`` lists the moves)."""
  import importlib  # pylint: disable=g-import-not-at-top
  try:
    return importlib.import_module(path)
  except ModuleNotFoundError:
    return importlib.import_module(old_path)


def measure(batches_root: str, rounds: int, logits_out: str,
            log) -> Dict[str, Any]:
  """One checkout's figures, in this process: the module's whole ``adapt``,
  the stateful pass up to ``features_all`` (traced before), one fine-tuning
  pass and the NumPy reference in ``rounds`` interleaved rounds; the logits
  after ``adapt`` and after one fine-tuning pass saved to ``logits_out``."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  from components.stateful import batches as batches_lib  # pylint: disable=g-import-not-at-top
  from components.stateful import model_io  # pylint: disable=g-import-not-at-top
  # A baseline checkout may predate the core's split by role (the flat
  # ``components.stateful.shards`` and ``.state`` of 3f033e7 and before).
  shards = _core('components.stateful.distribution.shards',
                 'components.stateful.shards')
  state = _core('components.stateful.state.protocol',
                'components.stateful.state')
  from components.stateful import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import model_setup  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import run as runner  # pylint: disable=g-import-not-at-top
  from components.stateful_trainer import settings  # pylint: disable=g-import-not-at-top
  train = batches_lib.BatchSource.open(batches_root, 'train')
  args = runner.TrainerArgs(
      batches_uri=batches_root, model_uri='', serving_model_dir='',
      model_run_dir='', eval_split=None, train=settings.TrainConfig(seed=0))
  # Read from the batches' metadata (scanned in a checkout before 135d2d4).
  label_stats = getattr(batches_lib, 'label_statistics',
                        batches_lib.scan_labels)
  spec = runner.make_spec(args, train.meta, label_stats(train))
  module = model_io.resolve_module(None)
  hold_out = settings.TrainConfig().validation_fraction
  keras.utils.set_random_seed(0)
  model = model_io.build_stateful(module, spec)
  batches = list(model_setup.Passes(train))
  real_steps = float(sum(np.asarray(b['mask']).sum() for b in batches))
  inputs = [(tf.constant(b['features']), tf.constant(b['reset']))
            for b in batches]
  scoring = module.label_scoring(spec)
  train_batches = [{k: tf.constant(v) for k, v in b.items()} for b in
                   train.dataset(label_scoring=scoring,
                                 validation_fraction=hold_out)
                   .as_numpy_iterator()]

  def adapt():
    return module.adapt(model_io.module_model(model), spec,
                        model_setup.Passes(train, hold_out, mark_carve=True),
                        shard=shards.Shard(), refit=model_setup.Refit())

  def probe_runner(output):
    probe = keras.Model(model.inputs, output)
    return tf.function(lambda f, r: steps_lib.run_model(
        probe, f, r, training=False), autograph=False)

  features = probe_runner(model.get_layer('features_all').output)
  convs = probe_runner(model.get_layer('conv_outputs').output)
  logits = probe_runner(model.output)

  def stream(run, keep_lanes=None):
    state.zero_all(model)
    kept = []
    for f, r in inputs:
      out = run(f, r)
      if keep_lanes:
        kept.append(out.numpy()[:keep_lanes])
    out.numpy()
    state.zero_all(model)
    return np.concatenate(kept, axis=1) if keep_lanes else None

  compiled = harness.compiled_steps(model, spec, module,
                                    module.optimizer_defaults(spec),
                                    total_steps=10_000)

  def fine_tune():
    compiled.zero_all()
    for batch in train_batches:
      out = compiled.train(batch)
    float(out['loss'])
    compiled.zero_all()

  times: Dict[str, List[float]] = {k: [] for k in (
      'adapt', 'feature_pass', 'fine_tune_pass', 'numpy_reference')}

  def timed(name, fn):
    started = time.perf_counter()
    out = fn()
    times[name].append(time.perf_counter() - started)
    return out

  # The probes run (and are optimised) with grappler's arithmetic rewrite
  # off, as in ``adapt``; the train step with it on, as in the trainer.
  saved = {}
  for i in range(rounds):
    summary = timed('adapt', adapt)
    if i == 0:
      params = model_params(model)
      with steps_lib.exact_arithmetic():
        saved['adapted'] = stream(logits, keep_lanes=B)
        model_lanes = stream(features, keep_lanes=2)
        conv_lanes = stream(convs, keep_lanes=2)
      fine_tune()  # Traces the train step.
      weights = model.get_weights()
      agree = agreement(params, batches, model_lanes, conv_lanes)
    with steps_lib.exact_arithmetic():
      timed('feature_pass', lambda: stream(features))
    timed('numpy_reference', lambda: reference_pass(params, batches))
    timed('fine_tune_pass', fine_tune)
    log(f'round {i + 1}/{rounds}: ' + ', '.join(
        f'{k} {v[-1]:.2f} s' for k, v in times.items()))
  model.set_weights(weights)  # The weights after one fine-tuning pass.
  with steps_lib.exact_arithmetic():
    saved['fine_tuned'] = stream(logits, keep_lanes=B)
  np.savez(logits_out, **saved)
  rate = matmul_rate()
  return {'seconds': {k: statistics.median(v) for k, v in times.items()},
          'all_seconds': times, 'real_steps': real_steps,
          'slots': float(len(batches) * B * T), 'batches': len(batches),
          'matmul_macs_per_s': rate, 'per_step': macs_per_step(params),
          'agreement': agree, 'adapt_summary': {
              k: v for k, v in summary.items()
              if isinstance(v, (int, float, str))}}


# --------------------------------------------------------------------------
# Children, report
# --------------------------------------------------------------------------


def child_measure(batches_root: str, rounds: int, logits_out: str
                  ) -> Dict[str, Any]:
  """``measure`` in a fresh process (``harness.call``)."""
  return measure(batches_root, rounds, logits_out,
                 harness.progress_log('feature_pass child'))


def run_child(code_root: str, batches_root: str, rounds: int,
              logits_out: str) -> Dict[str, Any]:
  """``measure`` in a fresh process on ``code_root``'s code."""
  result, res = harness.call('feature_pass.child_measure', batches_root,
                             rounds, logits_out, code_root=code_root,
                             interval=1.0)
  if result is None:
    sys.stderr.write(res.stderr[-3000:])
    raise RuntimeError(f'the measurement on {code_root} failed (exit code '
                       f'{res.returncode})')
  return result


def rates(r: Mapping[str, Any]) -> Dict[str, float]:
  """Real steps per second of each timed part, and the bound's."""
  s, steps = r['seconds'], r['real_steps']
  per_step = r['per_step']['conv_macs']
  bound_s = r['slots'] * per_step / r['matmul_macs_per_s']
  return {'numpy_reference': steps / s['numpy_reference'],
          'feature_pass': steps / s['feature_pass'],
          'fine_tune_pass': steps / s['fine_tune_pass'],
          'adapt': steps / s['adapt'], 'bound': steps / bound_s}


def same_bits(a: str, b: str) -> Dict[str, bool]:
  """Whether two children's saved logits are equal bit for bit."""
  x, y = np.load(a), np.load(b)
  return {k: bool(np.array_equal(x[k].view(np.int32), y[k].view(np.int32)))
          for k in x.files}


ROWS = (('numpy_reference', 'NumPy reference (same features, same data)'),
        ('feature_pass', 'model feature pass (up to `features_all`)'),
        ('fine_tune_pass', 'fine-tuning pass (compiled train step)'),
        ('adapt', '`adapt` as a whole'),
        ('bound', 'arithmetic bound (conv multiply-adds at the matmul '
         'rate)'))


def report(results: Mapping[str, Any]) -> str:
  runs = results['runs']
  cur = [r for r in runs if r['which'] == 'current']
  base = [r for r in runs if r['which'] == 'baseline']
  first = cur[0]
  lines = [TITLE, ''] + recorded.header(
      results, '**shared** with other jobs: compare ratios within a run, '
      'not absolute rates')
  lines += [
      '',
      f'The bundled sample\'s train split as the main job lays it out '
      f'({first["batches"]} batches of B={B} lanes, T={T} steps, '
      f'{first["real_steps"]:,.0f} real steps), the default model with its '
      'default hyperparameters (per-sequence labels: the PPV pools of its '
      f'{first["agreement"]["width"]} features). Each row: the median '
      'seconds of the rounds in one process, and real steps per second. '
      'The NumPy reference computes the same features from each lane\'s '
      'steps as one stream (a matrix product per dilation, running sums); '
      'the bound is the convolutions\' '
      f'{first["per_step"]["conv_macs"]:,} multiply-adds per step (every '
      'step of the batches, padding too) at the float32 matrix-product '
      'rate measured in the same process; the pools add '
      f'{first["per_step"]["pool_ops"]:,} element operations per step.', '']
  for label, group in (('current', cur), ('baseline', base)):
    if not group:
      continue
    header = ['part'] + [f'{label} {i + 1} s' for i in range(len(group))] + [
        f'{label} {i + 1} steps/s' for i in range(len(group))] + [
            'rate / NumPy (median)']
    rows = []
    for key, name in ROWS:
      if key == 'bound':
        secs = [r['real_steps'] / rates(r)['bound'] for r in group]
      else:
        secs = [r['seconds'][key] for r in group]
      rs = [rates(r)[key] for r in group]
      share = statistics.median(rates(r)[key] / rates(r)['numpy_reference']
                                for r in group)
      rows.append([name] + [f'{s:.2f}' for s in secs] +
                  [f'{x:,.0f}' for x in rs] + [f'{share:.2f}x'])
    lines += [f'{label.capitalize()} code:', '', harness.table(header, rows),
              '']
  share = statistics.median(rates(r)['feature_pass'] /
                            rates(r)['numpy_reference'] for r in cur)
  passes = statistics.median(r['seconds']['adapt'] /
                             r['seconds']['feature_pass'] for r in cur)
  lines.append(
      f'* Feature pass / NumPy reference rate: **{share:.2f}x** (target at '
      f'least {TARGET_RATE_SHARE}x: '
      f'{harness.verdict(share >= TARGET_RATE_SHARE)}); `adapt` / one '
      f'feature pass: **{passes:.2f}x** (target at most '
      f'{TARGET_ADAPT_PASSES}x: '
      f'{harness.verdict(passes <= TARGET_ADAPT_PASSES)}).')
  if base:
    for key, name in ROWS[1:4]:
      before = statistics.median(r['seconds'][key] for r in base)
      after = statistics.median(r['seconds'][key] for r in cur)
      norm_b = statistics.median(r['seconds'][key] /
                                 r['seconds']['numpy_reference']
                                 for r in base)
      norm_a = statistics.median(r['seconds'][key] /
                                 r['seconds']['numpy_reference'] for r in cur)
      lines.append(f'* {name}: baseline {before:.2f} s, current '
                   f'{after:.2f} s (**{before / after:.2f}x** faster; in '
                   f'NumPy-pass units {norm_b:.2f} -> {norm_a:.2f}, '
                   f'{norm_b / norm_a:.2f}x).')
    bits = results.get('same_bits', {})
    if bits:
      lines.append('* Logits on every train batch, baseline against '
                   'current, bit for bit: ' + ', '.join(
                       f'{k} {"identical" if v else "**differ**"}'
                       for k, v in sorted(bits.items())) + '.')
  a = first['agreement']
  lines.append(
      f'* Agreement (lanes 1-2, every step): the reference\'s convolution '
      f'outputs within {a["conv_max_abs"]:.1e} of the model\'s (relative '
      f'{a["conv_max_rel"]:.1e}); with the taps summed in the model\'s '
      f'order every feature within {a["exact_max_abs"]:.1e} '
      f'({a["exact_equal_share"]:.4%} bit-equal); the matrix-product '
      f'reference\'s PPV features differ at {a["fast_ppv_mismatch_share"]:.2e}'
      ' of (step, feature) pairs (outputs that round across a threshold).')
  lines += [f'* {note}' for note in results.get('notes', [])]
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = harness.parser(__doc__.split('\n')[0])
  recorded.add_options(p, 'also measure this checkout, in alternating '
                       'children')
  p.add_argument('--rounds', type=int, default=None,
                 help='timing rounds per child (default 3; quick: 1)')
  args = p.parse_args(argv)
  rounds = args.rounds or (1 if args.quick else 3)
  log = harness.progress_log('feature_pass')
  run = harness.Run()
  results, baseline = recorded.start(args)
  with tempfile.TemporaryDirectory(prefix='tss-feature-pass-') as tmp:
    batches_root = write_sample_batches(os.path.join(tmp, 'batches'))
    logits = {}

    def measure(which, i, root):
      out = os.path.join(tmp, f'{which}-{i}.npz')
      r = run_child(root, batches_root, rounds, out)
      logits.setdefault(which, out)
      log(f'{which} {i + 1}: ' + ', '.join(
          f'{k} {v:.2f} s' for k, v in r['seconds'].items()))
      return r

    recorded.run_in_turn(results, args.pairs or (1 if args.quick else 2),
                         {'baseline': baseline, 'current': harness.ROOT},
                         measure, log)
    if baseline:
      results['same_bits'] = same_bits(logits['baseline'], logits['current'])
  return recorded.finish(args, run, results, SECTION, report)


if __name__ == '__main__':
  sys.exit(main())
