"""Every setting (a field of ``PipelineConfig``, ``settings.TrainConfig``,
the evaluator's ``StatefulSettings`` or the batcher's ``ColumnConfig`` and
``LayoutConfig``) is declared once with its help, reaches the local
runner's and the Kubeflow compiler's parsers with the same default, and
reaches its component; every flag of the runners is a declared field's."""

import argparse
import dataclasses
import json
import re

import pytest

from components import declared
from components.sequence_batcher import __main__ as batcher_cli
from components.sequence_batcher import executor as batcher_executor
from components.sequence_batcher import layout
from components.sequence_batcher import sequences as seqlib
from components.stateful_evaluator import settings as evaluator_settings
from components.stateful_trainer import executor as trainer_executor
from components.stateful_trainer import settings
from kubeflow import compile as kubeflow_compile
from pipeline import flags as flags_lib
from pipeline import local_runner
from pipeline import pipeline as pipeline_lib
from pipeline import pipeline_config

FIELDS = [f.name for f in dataclasses.fields(settings.TrainConfig)]


def _other_value(spec: settings.FlagSpec):
  """A valid value different from the default, as (flag args, value)."""
  if spec.kind is bool:
    value = not spec.default
    return [spec.flag if value else '--no-' + spec.flag[2:]], value
  if spec.choices:
    value = [c for c in spec.choices if c != spec.default][0]
  elif spec.kind is float:
    value = 0.35
  elif spec.kind is str:
    value = 'x' + spec.default
  else:
    value = (spec.default or 0) + 3
  return [spec.flag, str(value)], value


def _all_flags():
  args, values = [], {}
  for spec in settings.flag_specs():
    flag_args, value = _other_value(spec)
    args += flag_args
    values[spec.name] = value
  return args, values


def test_every_field_has_a_flag_with_help():
  assert [s.name for s in settings.flag_specs()] == FIELDS
  for field in dataclasses.fields(settings.TrainConfig):
    assert len(field.metadata['help']) > 20, field.name


def test_help_shows_each_flag_with_its_meaning_and_default():
  text = ' '.join(flags_lib.build_parser().format_help().split())
  text = text[text.index('options:'):]  # The entries, not the usage line.
  for spec in settings.flag_specs():
    assert spec.flag in text, spec.flag
    first_words = ' '.join(spec.help.split()[:4])
    assert first_words in text, (spec.flag, first_words)
    # Not a dict lookup: 1 == True there.
    shown = 'unset' if spec.default is None else str(spec.default)
    after = text[text.index(spec.flag):]
    assert re.search(r'\(default: ' + re.escape(shown) + r'\)',
                     after[:800]), (spec.flag, shown)


def test_every_setting_reaches_the_trainer_from_the_local_runner(tmp_path):
  flags, values = _all_flags()
  args, beam = flags_lib.build_parser().parse_known_args(
      ['--data-root', str(tmp_path), '--output-dir', str(tmp_path)] + flags)
  assert not beam
  config = flags_lib.config_from_args(args)
  assert config.trainer.to_dict() == values
  p = pipeline_lib.create_pipeline(
      config, pipeline_root=str(tmp_path / 'root'))
  trainer = [c for c in p.components if c.id == 'StatefulTrainer'][0]
  props = trainer.exec_properties
  decoded = trainer_executor.train_config_from(props)
  assert decoded.to_dict() == values


def _compiled_trainer_parameters(tmp_path, flags):
  """The StatefulTrainer task's input parameters of the pipeline that
  ``kubeflow/compile.py`` compiles with ``flags``."""
  path = kubeflow_compile.compile_pipeline([
      '--image', 'gcr.io/p/img:1', '--output-file',
      str(tmp_path / 'pipeline.json'), '--pipeline-root', 'gs://b/root',
      '--data-root', 'gs://b/data'] + flags)
  with open(path) as f:
    spec = json.load(f)
  return spec['pipelineSpec']['root']['dag']['tasks']['StatefulTrainer'][
      'inputs']['parameters']


def test_every_setting_reaches_the_compiled_kubeflow_pipeline(tmp_path):
  flags, values = _all_flags()
  params = _compiled_trainer_parameters(tmp_path, flags)
  props = {}
  for name in FIELDS:
    if name in params:
      constant = params[name]['runtimeValue']['constantValue']
      props[name] = next(iter(constant.values()))
  assert sorted(props) == sorted(FIELDS)
  assert trainer_executor.train_config_from(props).to_dict() == values


def test_an_unknown_trainer_setting_is_an_error():
  with pytest.raises(settings.TrainingConfigError, match='unknown'):
    settings.TrainConfig.from_dict({'epoch': 3})


HP_FLAG = ['--hyperparameters', 'model=lstm,units=[64,32],dropout=0.1,'
           'learning_rate=0.003']
HP = {'model': 'lstm', 'units': [64, 32], 'dropout': 0.1,
      'learning_rate': 0.003}


def _trainer_hyperparameters(custom_config):
  """What the trainer's executor reads from the component's custom_config
  (JSON text in the exec properties and the compiled pipeline)."""
  if not isinstance(custom_config, str):
    custom_config = json.dumps(custom_config)
  return trainer_executor.parse_custom_config(custom_config)[
      'hyperparameters']


def test_hyperparameters_reach_the_trainer_from_the_local_runner(tmp_path):
  args, _ = flags_lib.build_parser().parse_known_args(
      ['--data-root', str(tmp_path), '--output-dir', str(tmp_path)] + HP_FLAG)
  config = flags_lib.config_from_args(args)
  assert config.hyperparameters == HP
  p = pipeline_lib.create_pipeline(
      config, pipeline_root=str(tmp_path / 'root'))
  trainer = [c for c in p.components if c.id == 'StatefulTrainer'][0]
  assert _trainer_hyperparameters(
      trainer.exec_properties['custom_config']) == HP


def test_hyperparameters_reach_the_compiled_kubeflow_pipeline(tmp_path):
  params = _compiled_trainer_parameters(tmp_path, HP_FLAG)
  constant = params['custom_config']['runtimeValue']['constantValue']
  assert _trainer_hyperparameters(next(iter(constant.values()))) == HP


def test_hyperparameters_flag_forms_and_errors():
  from components.stateful.models import hyperparameters as hp_lib
  assert hp_lib.parse('') == {}
  assert hp_lib.parse('{"units": [8], "model": "gru"}') == {
      'units': [8], 'model': 'gru'}
  assert hp_lib.parse("model=lru, r_min=0.5,half_lives=[4, 8],name='a,b'") == {
      'model': 'lru', 'r_min': 0.5, 'half_lives': [4, 8], 'name': "'a,b'"}
  for bad in ('units', '{"a": 1', '[1, 2]', '=3'):
    with pytest.raises(hp_lib.HyperparametersError, match='hyperparameters'):
      hp_lib.parse(bad)
  with pytest.raises(SystemExit):
    flags_lib.build_parser().parse_args(['--hyperparameters', 'units'])


def test_help_lists_the_default_modules_hyperparameters():
  from components.stateful.models import default_model as dm
  from components.stateful.models import hyperparameters as hp_lib
  text = ' '.join(flags_lib.build_parser().format_help().split())
  table = {n: d for n, d, _ in hp_lib.DEFAULT_MODEL}
  for name in table:
    assert f'{name} (' in text, name
  # The defaults shown are the module's.
  assert table['kernels'] == str(dm.KERNELS)
  assert table['half_lives'] == str(list(dm.HALF_LIVES))
  assert table['thresholds_per_kernel'].startswith(
      str(dm.THRESHOLDS_PER_KERNEL))
  assert str(dm.FINE_TUNE_LEARNING_RATE) in table['learning_rate']
  assert str(settings.OPTIMIZER_DEFAULTS['learning_rate']) in table[
      'learning_rate']


def test_replicas_and_workers_set_the_batchers_lane_multiple(tmp_path):
  args, _ = flags_lib.build_parser().parse_known_args(
      ['--data-root', str(tmp_path), '--output-dir', str(tmp_path),
       '--replicas', '2'])
  config = flags_lib.config_from_args(args)
  for workers, want in ((1, 2), (3, 6)):
    p = pipeline_lib.create_pipeline(
        config, pipeline_root=str(tmp_path / 'root'),
        trainer_workers=workers)
    batcher = [c for c in p.components if c.id == 'SequenceBatcher'][0]
    assert batcher.exec_properties['lane_multiple'] == want


def test_every_batcher_setting_reaches_the_batcher_from_the_pipeline(
    tmp_path):
  """``PipelineConfig``'s batcher settings reach the SequenceBatcher's
  parameters as its executor reads them."""
  values = dict(key_column='k', order_column='o', label_column='y',
                label_kind=layout.PER_STEP, feature_columns=('a', 'b'),
                exclude_columns=('z',), batch_size=4, num_unroll=5,
                mode=layout.BUCKETED, max_sequence_length=9, truncate=True)
  config = pipeline_config.PipelineConfig(
      data_root=str(tmp_path), output_dir=str(tmp_path), **values)
  assert config.batcher_settings() == values
  p = pipeline_lib.create_pipeline(config, pipeline_root=str(tmp_path / 'r'))
  batcher = [c for c in p.components if c.id == 'SequenceBatcher'][0]
  columns, layout_config, auto = batcher_executor.settings_from(
      batcher.exec_properties)
  got = {**dataclasses.asdict(columns), **dataclasses.asdict(layout_config)}
  assert {name: got[name] for name in values} == values
  assert auto == (False, False)


def test_the_kubeflow_compiler_does_not_import_the_local_runner():
  """The flags are declared once (pipeline/flags.py) for both front ends."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ('import sys, kubeflow.compile; '
          'assert "pipeline.local_runner" not in sys.modules')
  subprocess.run([sys.executable, '-c', code], check=True,
                 env={**__import__('os').environ, 'PYTHONPATH': '.'})


# The declarations whose fields are the runners' flags, with the prefix of
# their dests (``pipeline/flags.py``); the batcher's are its command line's.
RUNNER_DECLARATIONS = ((pipeline_config.PipelineConfig, ''),
                       (settings.TrainConfig, flags_lib.TRAINER),
                       (evaluator_settings.StatefulSettings,
                        flags_lib.EVALUATOR))
BATCHER_DECLARATIONS = ((seqlib.ColumnConfig, ''), (layout.LayoutConfig, ''))
# Settings the Kubeflow compiler takes in its own form (kubeflow/compile.py):
# the data root is required (a cluster path); there is no output dir.
COMPILER_OWN = {'data_root': 'required', 'output_dir': 'not accepted'}


def _option_strings(field):
  """Every flag string of a declared field (a bool's --no- form too)."""
  flag = declared.flag_name(field)
  if flag is None:
    return []
  out = [flag]
  if declared.kind_of(field) is bool:
    out.append('--no-' + flag[2:])
    if field.metadata.get('off_flag'):
      out.append(field.metadata['off_flag'])
  return out


def _check_reaches(parser, declarations, skip=()):
  """Each flagged field of ``declarations`` is on ``parser`` with its
  declaration's default and dest; returns the flags seen."""
  seen = set()
  for cls, prefix in declarations:
    defaults = cls()
    for field in dataclasses.fields(cls):
      if field.name in skip:
        continue
      for option in _option_strings(field):
        action = parser._option_string_actions.get(option)  # pylint: disable=protected-access
        assert action is not None, (cls.__name__, field.name, option)
        assert action.dest == prefix + field.name, (field.name, action.dest)
        seen.add(option)
      if declared.flag_name(field):
        want = getattr(defaults, field.name)
        got = parser._option_string_actions[declared.flag_name(field)].default  # pylint: disable=protected-access
        assert got == want and type(got) is type(want), (field.name, got,
                                                           want)
  return seen


def test_every_declared_setting_has_its_help():
  for cls, _ in RUNNER_DECLARATIONS + BATCHER_DECLARATIONS:
    for field in dataclasses.fields(cls):
      assert len(field.metadata.get('help', '')) > 10, (cls.__name__,
                                                         field.name)


def test_every_setting_reaches_the_local_runners_parser_and_nothing_else():
  parser = flags_lib.build_parser()
  seen = _check_reaches(parser, RUNNER_DECLARATIONS)
  options = set(parser._option_string_actions) - {'-h', '--help'}  # pylint: disable=protected-access
  assert options == seen, f'flags declared by hand: {options - seen}'


def test_every_setting_reaches_the_kubeflow_compilers_parser():
  parser = kubeflow_compile.build_parser()
  _check_reaches(parser, RUNNER_DECLARATIONS, skip=COMPILER_OWN)
  actions = parser._option_string_actions  # pylint: disable=protected-access
  assert actions['--data-root'].required
  assert actions['--output-dir'].help == argparse.SUPPRESS


def test_every_batcher_setting_reaches_the_batchers_command_line():
  parser = batcher_cli.build_parser()
  seen = _check_reaches(parser, BATCHER_DECLARATIONS)
  options = set(parser._option_string_actions) - {'-h', '--help'}  # pylint: disable=protected-access
  assert options - seen == {'--input', '--output', '--split'}


def test_the_pipeline_takes_the_batchers_column_and_layout_declarations():
  for cls in (seqlib.ColumnConfig, layout.LayoutConfig):
    for field in dataclasses.fields(cls):
      if field.name not in {f.name for f in dataclasses.fields(
          pipeline_config.PipelineConfig)}:
        continue
      mine = declared.field_of(pipeline_config.PipelineConfig, field.name)
      assert mine.metadata['choices'] == field.metadata['choices']
      if field.name not in ('batch_size', 'num_unroll'):  # From the data.
        assert mine.metadata['help'] == field.metadata['help'], field.name
        assert mine.default == field.default, field.name


def _evaluator_flags():
  args, values = [], {}
  for spec in declared.flag_specs(evaluator_settings.StatefulSettings):
    flag_args, value = _other_value(spec)
    args += flag_args
    values[spec.name] = value
  return args, values


def test_every_evaluator_setting_reaches_the_evaluator_from_the_local_runner(
    tmp_path):
  flags, values = _evaluator_flags()
  args = flags_lib.build_parser().parse_args(
      ['--data-root', str(tmp_path), '--output-dir', str(tmp_path)] + flags)
  config = flags_lib.config_from_args(args)
  assert config.evaluator.to_dict() == {
      **evaluator_settings.StatefulSettings().to_dict(), **values}
  p = pipeline_lib.create_pipeline(config, pipeline_root=str(tmp_path / 'r'))
  evaluator = [c for c in p.components if c.id == 'StatefulEvaluator'][0]
  assert evaluator_settings.StatefulSettings.from_json(
      evaluator.exec_properties['settings']).to_dict() == values


def test_every_evaluator_setting_reaches_the_compiled_kubeflow_pipeline(
    tmp_path):
  flags, values = _evaluator_flags()
  path = kubeflow_compile.compile_pipeline([
      '--image', 'gcr.io/p/img:1', '--output-file',
      str(tmp_path / 'pipeline.json'), '--pipeline-root', 'gs://b/root',
      '--data-root', 'gs://b/data'] + flags)
  with open(path) as f:
    spec = json.load(f)
  params = spec['pipelineSpec']['root']['dag']['tasks']['StatefulEvaluator'][
      'inputs']['parameters']
  constant = params['settings']['runtimeValue']['constantValue']
  assert evaluator_settings.StatefulSettings.from_json(
      next(iter(constant.values()))).to_dict() == values


def test_the_old_evaluator_flags_keep_their_meaning(tmp_path):
  base = ['--data-root', str(tmp_path), '--output-dir', str(tmp_path)]
  parser = flags_lib.build_parser()
  config = flags_lib.config_from_args(parser.parse_args(base))
  assert config.evaluator == evaluator_settings.StatefulSettings()
  config = flags_lib.config_from_args(parser.parse_args(
      base + ['--allow-no-skill', '--no-skill-margin', '0.02',
              '--skill-significance', '1.0', '--no-cache']))
  assert not config.evaluator.require_skill
  assert config.evaluator.no_skill_margin == 0.02
  assert config.evaluator.skill_significance == 1.0
  assert not config.enable_cache


def test_every_pipeline_setting_reaches_the_config(tmp_path):
  args, want = [], {}
  for spec in declared.flag_specs(pipeline_config.PipelineConfig):
    if spec.name in ('recipe', 'hyperparameters'):  # Their own tests.
      continue
    if spec.kind is tuple:
      flag_args, value = [spec.flag, 'a,b'], ('a', 'b')
    elif spec.name in ('data_root', 'output_dir', 'checkpoint_dir',
                       'module_file'):
      value = str(tmp_path / spec.name)
      flag_args = [spec.flag, value]
    else:
      flag_args, value = _other_value(spec)
    args += flag_args
    want[spec.name] = value
  want['max_sequence_length'] = 5
  args += ['--max-sequence-length', '5']
  config = flags_lib.config_from_args(flags_lib.build_parser().parse_args(
      args))
  assert {name: getattr(config, name) for name in want} == want
