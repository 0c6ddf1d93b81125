"""3. Training speed: the StatefulTrainer against what users would do instead.

``training.fit`` on ``packed`` batches against Keras ``fit`` padded to the
longest and on ``bucket_by_sequence_length`` batches, a wall-clock budget
each; then ``fit`` against the bare compiled step (BENCHMARKS.md section 3)."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List

import numpy as np

from benchmarks import harness
from benchmarks.harness import speed

B, T = 32, 32
UNITS = 32
LEARNING_RATE = 0.01
SEED = 0
MIN_STEPS = 3  # Every method runs at least this many steps (for a rate).


@dataclasses.dataclass
class Dataset:
  name: str
  description: str
  task: str            # 'classification' or 'regression'
  train: list
  evals: list
  names: List[str]


def datasets(quick: bool) -> List[Dataset]:
  seqs, names = harness.sample_sequences()
  if quick:  # Keeps a pad-to-max step short.
    seqs = [s for s in seqs if s.length <= 800][:150]
  train, evals = harness.split_train_eval(seqs)
  out = [Dataset('cue (bundled sample)',
                 f'`data/sample` ({len(seqs)} sequences), per-step class '
                 'labels; metric: last-step accuracy (higher is better)',
                 'classification', train, evals, names)]
  n = 200 if quick else 600
  seqs, names = harness.generated_sequences(
      n, seed=3, **dict(speed.FORECAST, max_length=800 if quick else 3000))
  train, evals = harness.split_train_eval(seqs)
  lengths = np.array([s.length for s in seqs])
  out.append(Dataset(
      'forecast (variable length)',
      f'`generate(target="forecast")`, {n} sequences, lengths '
      f'{lengths.min()}..{lengths.max()} (median {np.median(lengths):g}); '
      'per-step regression; metric: MAE over all eval steps (lower is better)',
      'regression', train, evals, names))
  return out


def spec_for(ds: Dataset, units: int = UNITS):
  from components.stateful import model_spec as ms  # pylint: disable=g-import-not-at-top
  kwargs = dict(num_classes=2) if ds.task == 'classification' else dict(
      output_size=1)
  return ms.ModelSpec(batch_size=B, num_unroll=T, stateful=True,
                      feature_names=tuple(ds.names), label_kind='per_step',
                      task=ds.task, hyperparameters={
                          'model': 'lstm', 'units': [units],
                          'learning_rate': LEARNING_RATE,
                          'clip_global_norm': 1.0}, seed=SEED, **kwargs)


def stateful_model(ds: Dataset, units: int = UNITS):
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  from components.stateful import model_io  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(SEED)
  module = model_io.resolve_module()
  spec = spec_for(ds, units)
  return model_io.build_stateful(module, spec), spec, module


def keras_model(ds: Dataset):
  """The same layers, whole sequences of any length, a Masking layer; the
  initial weights copied from the stateful model."""
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  reference, spec, _ = stateful_model(ds)
  inputs = keras.Input(shape=(None, len(ds.names)), name='features')
  x = keras.layers.Masking(mask_value=0.0)(inputs)
  x = keras.layers.LSTM(UNITS, return_sequences=True, name='lstm_0')(x)
  outputs = keras.layers.Dense(spec.output_units, name='head')(x)
  model = keras.Model(inputs, outputs)
  model.set_weights(reference.get_weights())
  if ds.task == 'classification':
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  else:
    loss = keras.losses.MeanSquaredError()
  model.compile(optimizer=keras.optimizers.Adam(
      learning_rate=LEARNING_RATE, global_clipnorm=1.0, jit_compile=False),
                loss=loss, weighted_metrics=[_real_steps_metric()])
  return model


def _keras_batch(features, labels, mask):
  """Sample weights = mask scaled so that Keras' mean over all B x L slots
  equals the mean over the real steps, as in our trainer."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  weight = mask * tf.cast(tf.size(mask), tf.float32) / tf.reduce_sum(mask)
  if labels.dtype.is_floating:
    labels = labels[..., None]
  return features, labels, weight


def pad_to_max_dataset(ds: Dataset, seed: int):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  feats, labels, mask = harness.padded(ds.train)
  data = tf.data.Dataset.from_tensor_slices((feats, labels, mask))
  return (data.shuffle(len(ds.train), seed=seed,
                       reshuffle_each_iteration=True)
          .batch(B).map(_keras_batch).prefetch(2))


def bucket_dataset(ds: Dataset, seed: int):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  lengths = [s.length for s in ds.train]
  nfeat = len(ds.names)
  label_dtype = tf.int64 if ds.task == 'classification' else tf.float32

  def gen():
    for s in ds.train:
      yield s.features, s.labels, np.ones(s.length, np.float32)

  data = tf.data.Dataset.from_generator(gen, output_signature=(
      tf.TensorSpec([None, nfeat], tf.float32),
      tf.TensorSpec([None], label_dtype),
      tf.TensorSpec([None], tf.float32))).cache()
  top = max(lengths)
  boundaries = [2**k for k in range(4, 40) if 2**k < top]
  return (data.shuffle(len(ds.train), seed=seed,
                       reshuffle_each_iteration=True)
          .bucket_by_sequence_length(
              element_length_func=lambda f, l, m: tf.shape(f)[0],
              bucket_boundaries=boundaries,
              bucket_batch_sizes=[B] * (len(boundaries) + 1))
          .map(_keras_batch).prefetch(2))


def score(ds: Dataset, outputs: Dict[str, Any]) -> float:
  """Last-step accuracy (classification) or MAE over all steps."""
  if ds.task == 'classification':
    hits = [int(np.argmax(outputs[s.key][s.length - 1])) == int(s.labels[-1])
            for s in ds.evals]
    return float(np.mean(hits))
  errors = np.concatenate([np.abs(outputs[s.key][:, 0] - s.labels)
                           for s in ds.evals])
  return float(errors.mean())


def eval_keras(ds: Dataset, model) -> float:
  """Whole eval sequences, sorted by length, B at a time."""
  outputs = {}
  seqs = sorted(ds.evals, key=lambda s: s.length)
  for i in range(0, len(seqs), B):
    group = seqs[i:i + B]
    feats, _, _ = harness.padded(group)
    out = model(feats, training=False).numpy()
    for j, s in enumerate(group):
      outputs[s.key] = out[j, :s.length]
  return score(ds, outputs)


def eval_stateful(ds: Dataset, model, source) -> float:
  """Chunked and stateful over the eval batches, each sequence's outputs put
  back together by the product's ``lanes_to_sequences``."""
  from components.stateful import batches as batches_lib  # pylint: disable=g-import-not-at-top
  from components.stateful import steps as steps_lib  # pylint: disable=g-import-not-at-top
  return score(ds, {r.key: r.outputs for r in batches_lib.lanes_to_sequences(
      steps_lib.predict_batches(model, source.dataset(keys=None)), T,
      fields=())})


@dataclasses.dataclass
class Outcome:
  """One method's run for the wall-clock budget.

  ``marks`` holds ``(seconds since the fit call, real steps seen so far)``
  at the end of every training step; the steady rate is taken from the end
  of the first step (which includes tracing) to the last.
  """
  method: str
  marks: List[tuple]
  real_per_epoch: int
  processed_per_epoch: int
  seconds: float             # the fit call's wall time
  metric: float

  @property
  def first_step(self) -> float:
    return self.marks[0][0]

  @property
  def rate(self) -> float:
    (t0, r0), (t1, r1) = self.marks[0], self.marks[-1]
    return (r1 - r0) / (t1 - t0) if t1 > t0 else math.nan

  @property
  def epoch_seconds(self) -> float:
    return self.real_per_epoch / self.rate

  @property
  def epochs_done(self) -> float:
    return self.marks[-1][1] / self.real_per_epoch

  @property
  def steps_done(self) -> int:
    return len(self.marks)


def batch_real_steps(source) -> List[int]:
  """Real time steps of every batch of a split, in order."""
  return [int(b['mask'].sum())
          for b in source.dataset(keys=('mask',)).as_numpy_iterator()]


def run_ours(ds: Dataset, root: str, budget: float) -> Outcome:
  from components.stateful import batches as batches_lib  # pylint: disable=g-import-not-at-top
  model, spec, module = stateful_model(ds)
  train = batches_lib.BatchSource.open(root, 'train')
  evals = batches_lib.BatchSource.open(root, 'eval')
  per_batch = batch_real_steps(train)
  marks = []
  seen = [0]

  def after_step(step: int) -> bool:
    seen[0] += per_batch[(step - 1) % len(per_batch)]
    now = time.perf_counter() - started
    marks.append((now, seen[0]))
    return now > budget and len(marks) >= MIN_STEPS

  started = time.perf_counter()
  harness.trainer_fit(model, spec, module, train, epochs=100000, seed=SEED,
                      after_step=after_step)
  seconds = time.perf_counter() - started
  meta = train.meta
  return Outcome(
      method='(a) ours: StatefulTrainer, packed', marks=marks,
      real_per_epoch=meta['real_timesteps'],
      processed_per_epoch=meta['num_batches'] * B * T, seconds=seconds,
      metric=eval_stateful(ds, model, evals))


def _real_steps_metric():
  """A Keras metric summing the real (weight > 0) steps of the epoch."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras as keras  # pylint: disable=g-import-not-at-top

  class RealSteps(keras.metrics.Metric):

    def __init__(self, name='real_steps', **kwargs):
      super().__init__(name=name, **kwargs)
      self.total = self.add_weight('total', initializer='zeros')

    def update_state(self, y_true, y_pred, sample_weight=None):
      del y_true, y_pred
      self.total.assign_add(tf.reduce_sum(
          tf.cast(sample_weight > 0, tf.float32)))

    def result(self):
      return self.total

  return RealSteps()


def _clock_callback(budget: float, marks: List[tuple]):
  """Keras callback: real steps seen after every batch; stops after
  ``budget`` seconds."""
  import tf_keras as keras  # pylint: disable=g-import-not-at-top

  class Clock(keras.callbacks.Callback):

    def on_train_begin(self, logs=None):
      self.started = time.perf_counter()
      self.before = 0.0   # Real steps of the finished epochs.

    def on_epoch_end(self, epoch, logs=None):
      self.before = marks[-1][1] if marks else 0.0

    def on_train_batch_end(self, batch, logs=None):
      now = time.perf_counter() - self.started
      marks.append((now, self.before + float(logs['real_steps'])))
      if now > budget and len(marks) >= MIN_STEPS:
        self.model.stop_training = True

  return Clock()


def run_keras(ds: Dataset, budget: float, which: str) -> Outcome:
  model = keras_model(ds)
  if which == 'pad':
    data = pad_to_max_dataset(ds, SEED)
    longest = max(s.length for s in ds.train)
    processed = len(ds.train) * longest
    name = '(b) Keras fit, pad-to-max + masking'
  else:
    data = bucket_dataset(ds, SEED)
    shapes = [f.shape[:2] for f, _, _ in data]  # One pass: the exact size.
    processed = int(sum(np.prod(x) for x in shapes))
    name = '(c) Keras fit, bucket_by_sequence_length'
  marks: List[tuple] = []
  started = time.perf_counter()
  model.fit(data, epochs=100000, verbose=0,
            callbacks=[_clock_callback(budget, marks)])
  seconds = time.perf_counter() - started
  real = sum(s.length for s in ds.train)
  return Outcome(method=name, marks=marks, real_per_epoch=real,
                 processed_per_epoch=processed, seconds=seconds,
                 metric=eval_keras(ds, model))


def overhead(ds: Dataset, root: str, epochs: int,
             units: int = UNITS) -> Dict[str, Any]:
  """Seconds per epoch of ``fit`` (``training.fit``), ``bare`` (the
  compiled step over batches in memory), ``input`` (``read_batches`` alone)
  and ``bare+input``; the last three run in ``fit``'s ``after_step`` hook at
  each epoch end (left out of ``fit``'s epoch times), so all four are
  measured interleaved."""
  from components.stateful import batches as batches_lib  # pylint: disable=g-import-not-at-top
  train = batches_lib.BatchSource.open(root, 'train')
  model, spec, module = stateful_model(ds, units)
  steps = harness.compiled_steps(model, spec, module, build=True,
                                 eval_metrics=True)
  batches = list(train.dataset())
  epoch = {
      'bare': lambda: speed.held_epoch(model, steps.train, batches),
      'input': lambda: speed.held_epoch(model, lambda b: b, train.dataset()),
      'bare+input': lambda: speed.held_epoch(model, steps.train,
                                             train.dataset())}
  times: Dict[str, List[float]] = {k: [] for k in epoch}
  for run in epoch.values():
    run()  # Traces and warms up.
  nb = train.num_batches

  def after_step(step: int) -> bool:
    if step % nb == 0 and step // nb <= epochs:
      for kind, run in epoch.items():
        times[kind].append(run())
    return False

  result = harness.trainer_fit(*stateful_model(ds, units), train,
                               epochs=epochs + 1, seed=SEED,
                               after_step=after_step)
  times['fit'] = [e.seconds for e in result.epochs[1:]]
  med = {k: statistics.median(v) for k, v in times.items()}
  best = {k: min(v) for k, v in times.items()}
  # The verdict uses the fastest epochs: on a shared machine other load can
  # only add time to an epoch, so the minimum is the least disturbed
  # estimate of each loop's own cost (as ``timeit`` recommends).
  return {'batches': nb, 'units': units, 'median': med, 'all': times,
          'best': best, 'overhead': best['fit'] / best['bare'] - 1.0,
          'overhead_median': med['fit'] / med['bare'] - 1.0}


def warm_up() -> None:
  """One short run of each method on tiny data, untimed, so that no method
  pays the process's first-use costs (TF/Keras initialisation)."""
  seqs, names = harness.generated_sequences(
      24, seed=9, median_length=40, max_length=64, short_fraction=0.0)
  tiny = Dataset('warm-up', '', 'classification', seqs[:16], seqs[16:], names)
  root = harness.write_batches(tempfile.mkdtemp(prefix='tss-bench-warm-'),
                              {'train': tiny.train, 'eval': tiny.evals},
                              batch_size=B, num_unroll=T,
                              label_kind='per_step', feature_names=names)
  run_ours(tiny, root, 0.0)
  run_keras(tiny, 0.0, 'pad')
  run_keras(tiny, 0.0, 'bucket')
  shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> int:
  p = harness.parser(__doc__.split('\n')[0])
  p.add_argument('--budget', type=float, default=None,
                 help='training seconds per method (default 40; quick 5)')
  args = p.parse_args(argv)
  budget = args.budget or (5.0 if args.quick else 40.0)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top,unused-import
  run = harness.Run()
  results = []
  overheads = {}
  work = tempfile.mkdtemp(prefix='tss-bench-train-')
  warm_up()
  for ds in datasets(args.quick):
    root = harness.write_batches(
        os.path.join(work, ds.name.split()[0]),
        {'train': ds.train, 'eval': ds.evals}, batch_size=B, num_unroll=T,
        label_kind='per_step', feature_names=ds.names)
    outcomes = []
    for fn in (lambda: run_ours(ds, root, budget),
               lambda: run_keras(ds, budget, 'pad'),
               lambda: run_keras(ds, budget, 'bucket')):
      outcome = fn()
      print(f'{ds.name}: {outcome.method}: {outcome.steps_done} steps, '
            f'{outcome.rate:.0f} real steps/s, metric {outcome.metric:.4f}',
            file=sys.stderr)
      outcomes.append(outcome)
    results.append((ds, outcomes))
    sizes = (UNITS,) if args.quick or ds.task != 'classification' else (
        UNITS, 4 * UNITS)
    for units in sizes:
      key = (ds.name, units)
      overheads[key] = overhead(ds, root, 2 if args.quick else 8, units)
      print(f'{key}: overhead {overheads[key]}', file=sys.stderr)
  shutil.rmtree(work, ignore_errors=True)
  run.finish()
  harness.write_report(args, 'training_speed',
                       *report(args, run, budget, results, overheads))
  return 0


def report(args, run, budget, results, overheads) -> list:
  rows = []
  verdicts = []
  for ds, outcomes in results:
    ours, pad, bucket = outcomes
    for o in outcomes:
      rows.append([
          ds.name.split()[0], o.method, f'{o.real_per_epoch:,}',
          f'{o.real_per_epoch / o.processed_per_epoch:.3f}',
          f'{o.first_step:.1f}', f'{o.epoch_seconds:.2f}',
          f'{o.epochs_done:.2f}', harness.si(o.rate),
          harness.si(o.rate * o.processed_per_epoch / o.real_per_epoch),
          harness.ratio(o.rate, pad.rate), f'{o.seconds:.0f}',
          f'{o.metric:.4f}'])
    better = (ours.metric >= pad.metric if ds.task == 'classification'
              else ours.metric <= pad.metric)
    verdicts.append((ds, ours.rate / pad.rate, better, ours.metric,
                     pad.metric, ours.rate / bucket.rate, bucket.metric))
  orows = []
  for (name, units), o in overheads.items():
    m, n = o['median'], o['batches']
    lo = {k: min(v) for k, v in o['all'].items()}
    orows.append([
        name.split()[0], f'LSTM {units}', n,
        f'{m["bare"]:.2f} / {lo["bare"]:.2f}',
        f'{m["input"]:.2f} / {lo["input"]:.2f}',
        f'{m["bare+input"]:.2f} / {lo["bare+input"]:.2f}',
        f'{m["fit"]:.2f} / {lo["fit"]:.2f}',
        f'{lo["bare"] / n * 1e3:.1f}',
        f'{(lo["bare+input"] - lo["bare"]) / n * 1e3:+.1f}',
        f'{(lo["fit"] - lo["bare+input"]) / n * 1e3:+.1f}',
        f'**{o["overhead_median"] * 100:+.1f}%**',
        f'{o["overhead"] * 100:+.1f}%',
        harness.verdict(o['overhead_median'] <= 0.15)])
  return [
      '## 3. Training speed against what users would do instead',
      run.preamble(args.quick),
      f'One LSTM layer of {UNITS} units + Dense head, the same initial '
      f'weights, Adam (lr {LEARNING_RATE}, clip norm 1), B={B}; (a) T={T}; '
      f'{budget:.0f} s of training each, then the same held-out sequences. '
      '"fill" = real / processed steps; rate = real steps/s after the first '
      'step.',
      [f'* **{ds.name}**: {ds.description}; {len(ds.train)} train / '
       f'{len(ds.evals)} eval sequences.' for ds, _ in results],
      harness.table(['data', 'method', 'real steps / epoch', 'fill',
                     'first step s', 's / epoch', 'epochs done',
                     'real steps/s', 'processed steps/s', 'rate vs (b)',
                     'trained s', 'eval metric'], rows,
                    align='llrrrrrrrrrr'),
      [f'* {ds.name}: (a) runs {speed:.1f}x the real-step rate of (b) and '
       f'{vs_bucket:.2f}x that of (c); target >= 2x (b): '
       f'{harness.verdict(speed >= 2)}. Eval metric after {budget:.0f} s: '
       f'(a) {m_ours:.4f}, (b) {m_pad:.4f}, (c) {m_bucket:.4f}; (a) no '
       f'worse than (b): {harness.verdict(better)}.'
       for ds, speed, better, m_ours, m_pad, vs_bucket, m_bucket in verdicts],
      'Trainer overhead, seconds per epoch (median / fastest), measured '
      'interleaved: "bare" = the compiled step over batches in memory; '
      '"input" = `read_batches` alone; "bare + input" = the step fed by it; '
      '"fit" = `training.fit`. Per-batch costs use the fastest epochs.',
      harness.table(['data', 'model', 'batches / epoch',
                     'bare s (median / best)', 'input alone s',
                     'bare + input s', 'fit s', 'bare ms / batch (best)',
                     'input cost ms / batch (best)',
                     'loop cost ms / batch (best)', 'fit vs bare (median)',
                     'fit vs bare (best)', 'target <= 15% (median)'], orows,
                    align='llrrrrrrrrrrc')]


if __name__ == '__main__':
  raise SystemExit(main())
