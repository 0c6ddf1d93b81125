"""beam_options.with_dependency_flags: TFX builds no sdist of itself on the
runners whose workers run in the launcher's environment, and every other
runner's dependency handling is left to the user and TFX."""

import sys

import apache_beam as beam
import pytest
from tfx.utils import dependency_utils

from pipeline import beam_options

IMAGE = (f'--sdk_container_image=apache/beam_python'
         f'{sys.version_info[0]}.{sys.version_info[1]}_sdk:{beam.__version__}')


@pytest.mark.parametrize('args', [
    [],
    ['--direct_running_mode=in_memory'],
    ['--runner=DirectRunner', '--direct_num_workers=2'],
    ['--runner=DaskRunner', '--dask_client_address=tcp://127.0.0.1:1'],
])
def test_local_environment_runners_get_the_default_image(args, monkeypatch):
  out = beam_options.with_dependency_flags(args)
  assert out == args + [IMAGE]
  # TFX then takes the dependencies as given: no sdist is built.
  def refuse():
    raise AssertionError('TFX built its ephemeral package')
  monkeypatch.setattr(dependency_utils, 'build_ephemeral_package', refuse)
  assert dependency_utils.make_beam_dependency_flags(out) == out


@pytest.mark.parametrize('args', [
    ['--setup_file=./setup.py'],
    ['--extra_package=/tmp/x.tar.gz'],
    ['--extra_packages', '/tmp/x.tar.gz'],
    ['--requirements_file=req.txt'],
    ['--sdk_container_image=my/image:1'],
    ['--runner=FlinkRunner', '--flink_master=localhost:8081'],
    ['--runner=DataflowRunner', '--project=p'],
])
def test_given_dependencies_and_remote_runners_are_left_alone(args):
  assert beam_options.with_dependency_flags(args) == args
