"""``model_io.load_module_file``: private copies of remote modules, one-line
errors for modules that do not import."""

import os
import stat
import tempfile

import pytest
import tensorflow as tf

from components.stateful import model_io


def test_remote_module_is_copied_to_a_private_directory():
  # ram:// is a TensorFlow file system that is not a local path, as gs://.
  path = 'ram://modules_test/remote_module.py'
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write('VALUE = 42\n')
  module = model_io.load_module_file(path)
  assert module.VALUE == 42
  local_dir = os.path.dirname(module.__file__)
  shared = os.path.join(tempfile.gettempdir(), 'stateful_trainer_modules')
  assert os.path.realpath(local_dir) != os.path.realpath(shared)
  assert os.path.basename(local_dir).startswith('stateful_module_')
  mode = stat.S_IMODE(os.stat(local_dir).st_mode)
  assert mode == 0o700, oct(mode)  # Not readable or writable by others.
  assert model_io.load_module_file(path) is module  # Imported once.


@pytest.mark.parametrize('source, expected', [
    ('def build_model(spec)\n  return None\n', r'SyntaxError: .*\(line 1\)'),
    ('import no_such_module_xyz\n', r"ModuleNotFoundError: No module named "
     r"'no_such_module_xyz'"),
    ('raise RuntimeError("broken\\nmodule")\n', 'RuntimeError: broken module'),
])
def test_a_module_that_does_not_import_is_a_one_line_module_error(
    tmp_path, source, expected):
  path = tmp_path / 'user_module.py'
  path.write_text(source)
  with pytest.raises(model_io.ModuleError, match=expected) as e:
    model_io.load_module_file(str(path))
  message = str(e.value)
  assert '\n' not in message and str(path) in message
