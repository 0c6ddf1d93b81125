"""tfx-stateful-sequences components.

``components.SequenceBatches`` is the artifact type's import path: Kubeflow V2
containers import custom artifact classes by their schema title, which must
look like ``<module>.<Class>``, so the class is reachable from here. It is
loaded lazily, so importing the TFX-free parts does not import TFX.
"""


def __getattr__(name):
  if name == 'SequenceBatches':
    from components.sequence_batcher.component import SequenceBatches  # pylint: disable=g-import-not-at-top
    return SequenceBatches
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
