"""Test set-up shared by the whole suite.

* Quiet TensorFlow's C++ logging before anything imports TensorFlow.
* Put the repository root on ``PYTHONPATH`` so that worker processes Beam
  starts (``direct_running_mode=multi_processing``) can import ``components``.
* ``dask_address``: a ``dask.distributed`` LocalCluster of 2 worker
  processes on 127.0.0.1, one per test module, stopped after it.
* Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) each
  test module runs whole on one worker, so its module fixtures are built
  once; the evaluator's modules, which share session fixtures (models
  trained once), run together on one worker.
"""

import os

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_paths = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
if _ROOT not in _paths:
  os.environ['PYTHONPATH'] = os.pathsep.join([_ROOT] + _paths)


# Folders whose modules share session fixtures: one xdist group each.
_SHARED_SESSION_FIXTURES = ('tests/components/stateful_evaluator',)


def pytest_collection_modifyitems(config, items):
  if not config.pluginmanager.hasplugin('xdist'):
    return
  for item in items:
    module = item.nodeid.split('::', 1)[0]
    folder = os.path.dirname(module)
    group = folder if folder in _SHARED_SESSION_FIXTURES else module
    item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope='module')
def dask_address():
  """The scheduler address of a LocalCluster (2 worker processes,
  loopback only) that lives for the test module."""
  import distributed  # pylint: disable=g-import-not-at-top
  cluster = distributed.LocalCluster(
      n_workers=2, threads_per_worker=1, processes=True, host='127.0.0.1',
      scheduler_port=0, dashboard_address=None)
  try:
    yield cluster.scheduler_address
  finally:
    cluster.close()
