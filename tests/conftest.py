"""Test set-up shared by the whole suite.

* Quiet TensorFlow's C++ logging before anything imports TensorFlow.
* Put the repository root on ``PYTHONPATH`` so that worker processes Beam
  starts (``direct_running_mode=multi_processing``) can import ``components``.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_paths = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
if _ROOT not in _paths:
  os.environ['PYTHONPATH'] = os.pathsep.join([_ROOT] + _paths)
