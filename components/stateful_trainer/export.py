"""The serving SavedModel: whole sequences, and chunks with explicit state.

``export_serving_model`` writes a SavedModel (loadable by TF Serving and
``tf.saved_model.load``) with four signatures. F is ``spec.num_features``
(features in ``spec.feature_names`` order), K the output size, S the number
of state tensors (``len(state.state_variables(stateful_model))``).

``serving_default`` — whole sequences:
  inputs:  ``features`` float32[N, L, F] (any N, L; zero-padded past each
           length), ``lengths`` int64[N] (1 <= lengths <= L).
  outputs (classification): ``logits``, ``probabilities`` float32[N, K] and
           ``classes`` int64[N] (per_sequence: the prediction at step
           ``lengths - 1``), or [N, L, K] / [N, L] (per_step; steps at or past
           ``lengths`` are 0, classes -1).
  outputs (regression): ``predictions`` float32[N, K] or [N, L, K].

``step`` — one chunk of a stream; the RNN state travels with the request, so
a stateless server (TF Serving) can serve stateful streams:
  inputs:  ``features`` float32[N, T', F] (any N, T' >= 1), ``reset``
           int64[N] (1 where the stream starts: its incoming state is
           ignored), ``state_0 .. state_{S-1}`` float32[N, ...].
  outputs: the per-step heads for the chunk (``logits``/``probabilities``
           [N, T', K], ``classes`` [N, T'], or ``predictions`` [N, T', K])
           and ``state_0 .. state_{S-1}``, the state after the chunk's last
           step (feed them to the next call). Every stream in a call advances
           T' steps.
  Running a sequence chunk by chunk through ``step`` (reset=1 on the first
  chunk) gives the same per-step predictions as ``serving_default``.

``serving_transformed`` — as ``serving_default`` but ``features`` are the
  model's inputs (already transformed, as in the SequenceBatcher's batches);
  the same as ``serving_default`` when there is no tf.Transform graph. The
  StatefulEvaluator's equivalence check runs the exported graph through it.

``initial_state`` — ``batch_size`` int64 scalar -> ``state_i`` zeros.

``serving_by_name`` and ``step_by_name`` — ``serving_default`` and ``step``
  with the features **by name**, so a client's column order cannot matter:
  one float32 input per feature, [N, L] (or [N, T']), named as the CSV
  column (``input_names``: the column name where it is a valid signature
  name and not ``lengths``, ``reset`` or ``state_*``, else ``feature_<i>``),
  beside ``lengths`` (or ``reset`` and the states). Classification outputs
  add ``class_names`` (string, the name of each predicted class).

``model_info`` — no input; what a client needs: ``feature_names`` and
  ``input_names`` string[F] (in the model's order), ``class_names``
  string[K] (classification: the labels as written, from the transform
  graph's class vocabulary, else the indices as text), ``task`` and
  ``label_kind``. The same facts are in ``assets.extra/model_info.json``.

State ``i`` is the i-th tensor of the stateful layers in model order (RNN cell
state order, LSTM: h then c), as ``state.state_variables`` lists them for the
stateful model; the ``step`` signature's TensorSpecs carry their shapes.

With a tf.Transform graph, ``features`` are **raw** values of the same
numeric columns (named by ``spec.feature_names``); the transform is applied
per time step inside both signatures, exactly as for the training examples.
The transform's outputs for those names must be one float per step.

No TFX import.
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from components.stateful import model_spec as ms
from components.stateful.state import explicit as explicit_state
from components.stateful.state import protocol as state

SERVING_DEFAULT = 'serving_default'
SERVING_TRANSFORMED = 'serving_transformed'
STEP = 'step'
INITIAL_STATE = 'initial_state'
SERVING_BY_NAME = 'serving_by_name'
STEP_BY_NAME = 'step_by_name'
MODEL_INFO = 'model_info'
MODEL_INFO_FILE = os.path.join('assets.extra', 'model_info.json')
_RESERVED = re.compile(r'^(lengths|reset|state_\d+)$')
_VALID = re.compile(r'^[A-Za-z0-9.][A-Za-z0-9_.\-/]*$')


def input_names(feature_names: Sequence[str]) -> List[str]:
  """The by-name signatures' input name of each feature."""
  out = []
  for i, name in enumerate(feature_names):
    ok = _VALID.match(name) and not _RESERVED.match(name) and name not in out
    out.append(name if ok else f'feature_{i}')
  return out


# The class vocabulary among a tf.Transform graph's assets (written by the
# pipeline's transform module, ``pipeline/transform_module.py``).
CLASS_VOCABULARY = 'label_classes'


def class_names(spec: ms.ModelSpec,
                transform_graph_uri: Optional[str] = None) -> List[str]:
  """The class names, or [] for regression: the transform graph's class
  vocabulary (the labels as the user wrote them) where it has one, else
  the indices as text."""
  if spec.task != ms.CLASSIFICATION:
    return []
  count = int(spec.num_classes or spec.output_size)
  names = [str(i) for i in range(count)]
  if transform_graph_uri:
    path = os.path.join(transform_graph_uri, 'transform_fn', 'assets',
                        CLASS_VOCABULARY)
    if tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        vocabulary = [line.rstrip('\n') for line in f]
      names = vocabulary[:count] + names[len(vocabulary):]
  return names


def model_info(spec: ms.ModelSpec,
               names: Optional[Sequence[str]] = None) -> Dict[str, object]:
  """What a client needs to call the model (``model_info``)."""
  return {'feature_names': list(spec.feature_names),
          'input_names': input_names(spec.feature_names),
          'class_names': list(class_names(spec) if names is None else names),
          'task': spec.task, 'label_kind': spec.label_kind}


def state_name(i: int) -> str:
  return f'state_{i}'


def check_transform_features(transform_graph_uri: str,
                             feature_names: Sequence[str]):
  """Raises ``ValueError`` unless the transform graph takes and outputs
  every feature of ``feature_names`` by name (what the serving signatures
  need); run before training, so a mismatch fails in seconds.

  Returns:
    The ``tft.TFTransformOutput``.
  """
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  output = tft.TFTransformOutput(transform_graph_uri)
  raw_spec = output.raw_feature_spec()
  missing = [n for n in feature_names if n not in raw_spec]
  if missing:
    raise ValueError(
        f'the transform graph {transform_graph_uri} has no raw feature '
        f'{missing}; its raw features are {sorted(raw_spec)}. The serving '
        'signatures feed the model\'s feature columns by name.')
  transformed = output.transformed_feature_spec()
  missing = [n for n in feature_names if n not in transformed]
  if missing:
    raise ValueError(
        f'the transform graph {transform_graph_uri} does not output '
        f'{missing} (it outputs {sorted(transformed)}): the batches\' '
        'feature names must be transform outputs of the same name')
  return output


class RawFeatureTransform(tf.Module):
  """Applies a tf.Transform graph to per-step feature tensors.

  ``__call__(features float32[N, L, F]) -> float32[N, L, F]``: every step is
  one raw example with the columns ``feature_names``; the transformed
  columns of the same names are stacked back in order.
  """

  def __init__(self, transform_graph_uri: str, feature_names: Sequence[str]):
    super().__init__(name='raw_feature_transform')
    output = check_transform_features(transform_graph_uri, feature_names)
    raw_spec = output.raw_feature_spec()
    self._names = list(feature_names)
    self._raw_spec = {n: raw_spec[n] for n in feature_names}
    # The transform graph's loader, as tft's ``TransformFeaturesLayer``
    # wraps it, without that Keras model around it: saving a Keras model
    # traces its call again (seconds) for a signature nobody uses. What the
    # layer tracks (the loaded graph: its tables, assets) is tracked here.
    from tensorflow_transform.saved import saved_transform_io_v2  # pylint: disable=g-import-not-at-top
    self._loader = saved_transform_io_v2.SavedModelLoader(
        output.transform_savedmodel_dir)
    self.loader_state = self._loader.__dict__

  def _trackable_children(self, save_type='checkpoint', **kwargs):
    children = super()._trackable_children(save_type, **kwargs)
    children.pop('_loader', None)  # Its state is ``loader_state``.
    return children

  def _raw_column(self, values: tf.Tensor, name: str):
    spec = self._raw_spec[name]
    values = tf.cast(values, spec.dtype)
    if isinstance(spec, tf.io.FixedLenFeature):
      shape = list(spec.shape)
      if shape not in ([], [1]):
        raise ValueError(f'raw feature {name!r} has shape {shape}; one value '
                         'per step is supported')
      return values if not shape else values[:, None]
    # VarLen: one value per row.
    rows = tf.shape(values, out_type=tf.int64)[0]
    indices = tf.stack([tf.range(rows), tf.zeros([rows], tf.int64)], axis=1)
    return tf.SparseTensor(indices, values, tf.stack([rows, 1]))

  def __call__(self, features: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(features)
    flat = tf.reshape(features, [-1, len(self._names)])
    raw = {n: self._raw_column(flat[:, i], n)
           for i, n in enumerate(self._names)}
    out = self._loader.apply_transform_model(raw)
    cols = []
    for name in self._names:
      value = out[name]
      if isinstance(value, tf.SparseTensor):
        value = tf.sparse.to_dense(value)
      cols.append(tf.reshape(tf.cast(value, tf.float32), [-1]))
    return tf.reshape(tf.stack(cols, axis=-1), shape)


def _heads(spec: ms.ModelSpec, outputs: tf.Tensor,
           valid: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
  """Named outputs; ``valid`` bool[..., L] zeroes padded steps."""
  if spec.task == ms.CLASSIFICATION:
    heads = {'logits': outputs, 'probabilities': tf.nn.softmax(outputs),
             'classes': tf.argmax(outputs, axis=-1, output_type=tf.int64)}
  else:
    heads = {'predictions': outputs}
  if valid is None:
    return heads
  masked = {}
  for name, value in heads.items():
    if name == 'classes':
      masked[name] = tf.where(valid, value, tf.constant(-1, tf.int64))
    else:
      masked[name] = tf.where(valid[..., None], value, tf.zeros_like(value))
  return masked


class ServingModule(tf.Module):
  """The exported module: the twin's variables and the signature functions.

  Each costly graph is traced once, and the signatures call it: the twin's
  whole-sequence pass (``serving_transformed``), its chunk with explicit
  state (``_step_transformed``) and the tf.Transform graph
  (``_transform_features``). ``serving_default`` and ``step`` are the
  transform followed by those; the by-name signatures stack their inputs
  and call ``serving_default`` or ``step``.
  """

  def __init__(self, spec: ms.ModelSpec, twin: keras.Model,
               transform: Optional[RawFeatureTransform] = None,
               classes: Optional[Sequence[str]] = None):
    super().__init__(name='stateful_serving')
    self._spec = spec
    self._twin = twin  # Not tracked as a Keras model: only its variables.
    self.model_variables = list(twin.variables)
    self.transform = transform
    self.state_shapes = explicit_state.serving_state_shapes(twin)
    f = spec.num_features
    features = tf.TensorSpec([None, None, f], tf.float32, name='features')
    lengths = tf.TensorSpec([None], tf.int64, name='lengths')
    reset = tf.TensorSpec([None], tf.int64, name='reset')
    states = [tf.TensorSpec([None] + s.as_list(), tf.float32,
                            name=state_name(i))
              for i, s in enumerate(self.state_shapes)]
    names = input_names(spec.feature_names)
    by_name = [tf.TensorSpec([None, None], tf.float32, name=n) for n in names]
    self.info_json = json.dumps(model_info(spec, classes), indent=1)
    self._class_names = tf.constant(
        json.loads(self.info_json)['class_names'] or [''], tf.string)

    def function(fn, signature):
      return tf.function(fn, autograph=False, input_signature=signature)

    self._transform_features = (None if transform is None else function(
        transform.__call__, [features]))
    self.serving_transformed = function(self._whole_sequences,
                                        [features, lengths])
    self._step_transformed = function(self._step_on_model_inputs,
                                      [features, reset] + states)
    self.serving_default = function(self._serve_sequences,
                                    [features, lengths])
    self.step = function(self._serve_step, [features, reset] + states)
    self.initial_state = function(
        self._initial_state, [tf.TensorSpec([], tf.int64, name='batch_size')])
    self.serving_by_name = function(self._serve_by_name, by_name + [lengths])
    self.step_by_name = function(self._step_by_name,
                                 by_name + [reset] + states)
    self.model_info = function(self._model_info, [])

  def _with_class_names(self, result):
    if 'classes' in result:
      result['class_names'] = tf.where(
          result['classes'] >= 0,
          tf.gather(self._class_names, tf.maximum(result['classes'], 0)),
          tf.constant('', tf.string))
    return result

  def _serve_by_name(self, *args):
    f = self._spec.num_features
    features = tf.stack(list(args[:f]), axis=-1)
    return self._with_class_names(self.serving_default(features, args[f]))

  def _step_by_name(self, *args):
    f = self._spec.num_features
    features = tf.stack(list(args[:f]), axis=-1)
    return self._with_class_names(
        self.step(features, args[f], *args[f + 1:]))

  def _model_info(self):
    info = json.loads(self.info_json)
    return {'feature_names': tf.constant(info['feature_names'], tf.string),
            'input_names': tf.constant(info['input_names'], tf.string),
            'class_names': tf.constant(info['class_names'], tf.string,
                                       shape=[len(info['class_names'])]),
            'task': tf.constant(info['task']),
            'label_kind': tf.constant(info['label_kind'])}

  def _features(self, features):
    return (self._transform_features(features)
            if self._transform_features is not None else features)

  def _serve_sequences(self, features, lengths):
    return self.serving_transformed(self._features(features), lengths)

  def _whole_sequences(self, features, lengths):
    features = tf.ensure_shape(features, [None, None, self._spec.num_features])
    max_len = tf.shape(features, out_type=tf.int64)[1]
    checks = [
        tf.debugging.assert_equal(
            tf.shape(lengths)[0], tf.shape(features)[0],
            message='lengths must have one entry per sequence'),
        tf.debugging.assert_greater_equal(
            lengths, tf.constant(1, tf.int64),
            message='every length must be >= 1'),
        tf.debugging.assert_less_equal(
            lengths, max_len, message='a length exceeds the padded length'),
    ]
    with tf.control_dependencies(checks):
      outputs = self._twin(features, training=False)
    if self._spec.label_kind == ms.PER_SEQUENCE:
      last = tf.gather(outputs, lengths - 1, axis=1, batch_dims=1)
      return _heads(self._spec, last)
    valid = tf.range(max_len)[None, :] < lengths[:, None]
    return _heads(self._spec, outputs, valid)

  def _serve_step(self, features, reset, *states):
    return self._step_transformed(self._features(features), reset, *states)

  def _step_on_model_inputs(self, features, reset, *states):
    keep = tf.equal(reset, 0)
    states_in = [
        tf.where(tf.reshape(keep, [-1] + [1] * (s.shape.rank - 1)), s,
                 tf.zeros_like(s)) for s in states
    ]
    outputs, states_out = explicit_state.run_with_states(self._twin, features,
                                                states_in)
    result = _heads(self._spec, outputs)
    for i, s in enumerate(states_out):
      result[state_name(i)] = tf.cast(s, tf.float32)
    return result

  def _initial_state(self, batch_size):
    return {
        state_name(i): tf.zeros(
            tf.concat([[batch_size], tf.constant(s.as_list(), tf.int64)], 0))
        for i, s in enumerate(self.state_shapes)
    }

  def _trackable_children(self, save_type='checkpoint', **kwargs):
    children = super()._trackable_children(save_type, **kwargs)
    children.pop('_twin', None)
    return children


def export_serving_model(
    export_dir: str, twin: keras.Model, spec: ms.ModelSpec,
    transform_graph_uri: Optional[str] = None) -> ServingModule:
  """Writes the serving SavedModel of ``twin`` (trained weights) to
  ``export_dir``; see the module docstring for the signatures."""
  transform = (RawFeatureTransform(transform_graph_uri, spec.feature_names)
               if transform_graph_uri else None)
  module = ServingModule(spec, twin, transform,
                         class_names(spec, transform_graph_uri))
  # The functions themselves, not concrete functions traced here: tracing
  # outside the save's context traces everything again while it saves (its
  # variable policy is part of the trace cache's key).
  signatures = {
      SERVING_DEFAULT: module.serving_default,
      SERVING_TRANSFORMED: module.serving_transformed,
      STEP: module.step,
      INITIAL_STATE: module.initial_state,
      SERVING_BY_NAME: module.serving_by_name,
      STEP_BY_NAME: module.step_by_name,
      MODEL_INFO: module.model_info,
  }
  tf.io.gfile.makedirs(os.path.dirname(export_dir.rstrip('/')) or '.')
  tf.saved_model.save(module, export_dir, signatures=signatures)
  info_path = os.path.join(export_dir, MODEL_INFO_FILE)
  tf.io.gfile.makedirs(os.path.dirname(info_path))
  with tf.io.gfile.GFile(info_path, 'w') as f:
    f.write(module.info_json)
  return module
