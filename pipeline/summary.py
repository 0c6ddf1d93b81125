"""The run summary: read back from ML Metadata and the artifacts it points to."""

from __future__ import annotations

import json
import math
import os
from typing import Dict, Optional

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline import pipeline_config

_BATCHER_KEYS = ('num_sequences', 'num_batches', 'real_timesteps',
                 'padded_timesteps', 'efficiency')


def _store(config: pipeline_config.PipelineConfig) -> metadata_store.MetadataStore:
  cc = metadata_store_pb2.ConnectionConfig()
  cc.sqlite.filename_uri = config.metadata_path
  cc.sqlite.connection_mode = (
      metadata_store_pb2.SqliteMetadataSourceConfig.READONLY)
  return metadata_store.MetadataStore(cc)


def _latest_run_executions(store, pipeline_name: str):
  """Executions of the newest pipeline run (LocalDagRunner run context)."""
  # The metadata database belongs to one output directory (one pipeline).
  del pipeline_name
  runs = store.get_contexts_by_type('pipeline_run')
  if not runs:
    return []
  latest = max(runs, key=lambda c: c.create_time_since_epoch)
  return store.get_executions_by_context(latest.id)


def _component_id(store, execution) -> str:
  """The component id, from the execution's 'node' context (pipeline.id)."""
  for ctx in store.get_contexts_by_execution(execution.id):
    if store.get_context_types_by_id([ctx.type_id])[0].name == 'node':
      return ctx.name.split('.', 1)[-1]
  return execution.name or str(execution.id)


def _latest_artifact(store, type_name: str):
  """The newest LIVE artifact of a type, or None."""
  try:
    arts = store.get_artifacts_by_type(type_name)
  except mlmd_errors.NotFoundError:  # No such type yet: none written.
    return None
  live = [a for a in arts if a.state == metadata_store_pb2.Artifact.LIVE]
  if not live:
    return None
  return max(live, key=lambda a: (a.create_time_since_epoch, a.id))


def _latest_artifact_uri(store, type_name: str) -> Optional[str]:
  art = _latest_artifact(store, type_name)
  return art.uri if art is not None else None


def _custom(art, name: str):
  if art is None or name not in art.custom_properties:
    return None
  value = art.custom_properties[name]
  return getattr(value, value.WhichOneof('value'))


def _eval_metrics(uri: Optional[str], task: str) -> Dict:
  """The candidate's overall figures from the evaluator's document (copied
  there from TFMA's results): accuracy and cross-entropy loss, or MAE, RMSE
  and MSE; the per-class metrics by class name; plus the no-skill gate."""
  path = os.path.join(uri or '', 'stateful_evaluation.json')
  if not uri or not os.path.exists(path):
    return {}
  with open(path) as f:
    doc = json.load(f)
  overall = doc['tfma']['metrics'].get('candidate', {}).get('overall', {})
  out = {}
  if doc.get('task', task) == 'classification':
    names = {'accuracy': 'sparse_categorical_accuracy',
             'loss': 'sparse_categorical_crossentropy'}
  else:
    names = {'mae': 'mean_absolute_error', 'mse': 'mean_squared_error'}
  for short, name in names.items():
    if overall.get(name) is not None:
      out[short] = overall[name]
  if out.get('mse') is not None:
    out['rmse'] = math.sqrt(out['mse'])
  if doc.get('per_class'):
    out['per_class'] = doc['per_class']
  gate = doc.get('no_skill', {}).get('gate', {})
  if gate:
    out['no_skill'] = {'metric': gate.get('metric'),
                       'best': gate.get('best_no_skill'),
                       'beaten': gate.get('ok')}
  return out


def collect(config: pipeline_config.PipelineConfig, wall_seconds: float) -> Dict:
  """Builds the summary dict written to ``summary.json``."""
  store = _store(config)
  executions = _latest_run_executions(store, config.pipeline_name)
  components = {}
  for e in executions:
    name = _component_id(store, e)
    secs = max(0, e.last_update_time_since_epoch -
               e.create_time_since_epoch) / 1000.0
    state = metadata_store_pb2.Execution.State.Name(e.last_known_state)
    components[name] = {'seconds': round(secs, 2), 'state': state}
  summary = {
      'pipeline_name': config.pipeline_name,
      'output_dir': config.output_dir,
      'wall_seconds': round(wall_seconds, 2),
      'components': components,
      'cached': sorted(n for n, c in components.items()
                       if c['state'] == 'CACHED'),
  }
  uri = _latest_artifact_uri(store, 'components.SequenceBatches')
  batcher = {}
  if uri and os.path.exists(os.path.join(uri, 'metadata.json')):
    with open(os.path.join(uri, 'metadata.json')) as f:
      meta = json.load(f)
    for split, stats in meta['splits'].items():
      batcher[split] = {k: stats[k] for k in _BATCHER_KEYS}
    summary['batches_uri'] = uri
  summary['batcher'] = batcher
  evaluation_uri = _latest_artifact_uri(store, 'ModelEvaluation')
  summary['evaluation_uri'] = evaluation_uri
  summary['eval'] = _eval_metrics(evaluation_uri, config.task)
  blessing = _latest_artifact(store, 'ModelBlessing')
  summary['blessed'] = (bool(_custom(blessing, 'blessed'))
                        if blessing is not None else False)
  summary['blessing_message'] = _custom(blessing, 'blessing_message')
  pushed = _latest_artifact(store, 'PushedModel')
  summary['pushed_model'] = (_custom(pushed, 'pushed_destination')
                             if pushed is not None and _custom(pushed, 'pushed')
                             else None)
  summary['model_uri'] = _latest_artifact_uri(store, 'Model')
  return summary


def render(summary: Dict) -> str:
  """A short human summary."""
  lines = [f"Pipeline {summary['pipeline_name']} finished in "
           f"{summary['wall_seconds']:.1f} s"]
  for split, s in sorted(summary.get('batcher', {}).items()):
    lines.append(
        f"  batcher[{split}]: {s['num_sequences']} sequences, "
        f"{s['num_batches']} batches, {s['real_timesteps']} real + "
        f"{s['padded_timesteps']} padded steps, efficiency "
        f"{s['efficiency']:.3f}")
  if summary.get('eval'):
    lines.append('  eval: ' + ', '.join(
        f'{k} {v:.4f}' for k, v in summary['eval'].items()
        if isinstance(v, (int, float))))
    gate = summary['eval'].get('no_skill')
    if gate and gate.get('best') is not None:
      lines.append(f'  no-skill {gate["metric"]}: {gate["best"]:.4f} '
                   f'({"beaten" if gate["beaten"] else "NOT beaten"})')
  lines.append(f"  blessed: {summary.get('blessed')}"
               f" ({summary.get('blessing_message') or 'no blessing'})")
  lines.append(f"  pushed model: {summary.get('pushed_model')}")
  for name, c in sorted(summary.get('components', {}).items()):
    lines.append(f"  {name}: {c['state'].lower()} in {c['seconds']:.1f} s")
  lines.append(f"  summary: {os.path.join(summary['output_dir'], 'summary.json')}")
  return '\n'.join(lines)
