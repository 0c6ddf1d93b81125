"""``--recipe keras``: the local runner's flags for Keras fit's recipe."""

from __future__ import annotations

from components.stateful_trainer import settings
from pipeline import input_check
from pipeline import flags as flags_lib
from tests.components.sequence_batcher import malformed


def _config(*flags):
  args, _ = flags_lib.build_parser().parse_known_args(list(flags))
  return flags_lib.config_from_args(args)


def test_keras_recipe_sets_the_trainer_and_layout(tmp_path):
  default = _config('--output-dir', str(tmp_path))
  keras = _config('--output-dir', str(tmp_path), '--recipe', 'keras',
                  '--hyperparameters', 'learning_rate=0.01')
  assert default.recipe == 'default' and default.mode == 'packed'
  assert default.trainer.validation_fraction > 0
  assert default.trainer.refit is True
  assert keras.mode == 'bucketed' and keras.batch_size == 32
  for name, value in settings.KERAS_RECIPE.items():
    assert getattr(keras.trainer, name) == value, name
  assert keras.hyperparameters == {**settings.KERAS_OPTIMIZER,
                                   'learning_rate': 0.01}
  given = _config('--output-dir', str(tmp_path), '--recipe', 'keras',
                  '--batch-size', '8', '--num-unroll', '5')
  assert (given.batch_size, given.num_unroll) == (8, 5)


def test_the_check_gives_the_longest_training_sequence(tmp_path):
  data = malformed.write(malformed.Case(
      {'a.csv': malformed.HEADER + malformed.GOOD}, ()), str(tmp_path / 'd'))
  config = _config('--data-root', data, '--output-dir', str(tmp_path / 'o'))
  counts, names, longest = input_check.check_input_details(config)
  assert names == ['x'] and sum(counts.values()) == 7
  # 'a' has two steps; whether it is in train depends on the key hash.
  assert longest in (1, 2)
