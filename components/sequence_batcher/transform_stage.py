"""The Transform graph applied while decoding: raw tf.Example rows -> the
rows Transform would have written.

With ``transform_graph`` set, the batcher reads ExampleGen's raw rows and
applies a tf.Transform graph (a TFX ``TransformGraph`` artifact) itself, so
Transform only analyses (``materialize=False``) and no transformed example is
written and read again. The steps are tf.Transform's own for
``TransformDataset`` (TF2): the records decoded by the graph's raw schema
(TFXIO's decoder and tensor adapter for tf.Examples), the transform
SavedModel's function applied to the whole batch, its outputs made an Arrow
record batch by the transformed schema. That record batch then goes where a
decoded batch of materialized examples goes (``decode.chunks_of_batch``), so
the batches written are the same, byte for byte
(``tests/pipeline/test_transform_once.py``).
"""

from __future__ import annotations

import threading
from typing import Dict, List, Sequence

from components.sequence_batcher import sequences as seqlib

_LOCK = threading.Lock()
_LOADED: Dict[str, '_Graph'] = {}


class _Graph:
  """One transform graph, loaded once per process (by ``graph``)."""

  def __init__(self, uri: str):
    # pylint: disable=g-import-not-at-top
    import tensorflow_transform as tft
    from tensorflow_transform import impl_helper
    from tensorflow_transform.saved import saved_transform_io_v2
    from tfx_bsl.coders import example_coder
    from tfx_bsl.tfxio import tensor_adapter
    from tfx_bsl.tfxio import tensor_representation_util
    # pylint: enable=g-import-not-at-top
    output = tft.TFTransformOutput(uri)
    raw = output.raw_metadata.schema
    self._decoder = example_coder.ExamplesToRecordBatchDecoder(
        raw.SerializeToString())
    representations = (
        tensor_representation_util.InferTensorRepresentationsFromMixedSchema(
            raw))
    self._adapter = tensor_adapter.TensorAdapter(
        tensor_adapter.TensorAdapterConfig(self._decoder.ArrowSchema(),
                                           representations))
    loader = saved_transform_io_v2.SavedModelLoader(
        output.transform_savedmodel_dir)
    loader.finalize(set(representations), set(loader.structured_outputs))
    self._apply = loader.apply_transform_model
    self._converter = impl_helper.make_tensor_to_arrow_converter(
        output.transformed_metadata.schema)

  def transform(self, records: List[bytes], source: str):
    """Serialized raw tf.Examples -> the transformed Arrow record batch (row
    i from record i)."""
    try:
      raw = self._decoder.DecodeBatch(records)
    except RuntimeError as e:
      raise seqlib.InputDataError(
          f'{source}: cannot decode the rows by the transform graph\'s raw '
          f'schema: {" ".join(str(e).split())}') from e
    try:
      out = self._apply(self._adapter.ToBatchTensors(
          raw, produce_eager_tensors=True))
    except Exception as e:  # pylint: disable=broad-except
      raise seqlib.InputDataError(
          f'{source}: the transform graph failed on these rows: '
          f'{" ".join(str(e).split())[:500]}') from e
    batch = self._converter.convert(out)
    if batch.num_rows != len(records):
      raise seqlib.InputDataError(
          f'{source}: the transform graph gave {batch.num_rows} rows for '
          f'{len(records)}; the batcher needs one row out per row in')
    return batch


def graph(uri: str) -> _Graph:
  """The loaded graph at ``uri``, shared by every decoder of the process."""
  with _LOCK:
    if uri not in _LOADED:
      _LOADED[uri] = _Graph(uri)
    return _LOADED[uri]


def transform_examples(records: Sequence[bytes], graph_uri: str,
                       columns: seqlib.ColumnConfig,
                       source: str) -> List[seqlib.RowChunk]:
  """Serialized raw ``tf.train.Example`` rows -> chunks of their transformed
  columns (``decode.decode_examples`` of the rows Transform would write)."""
  from components.sequence_batcher import decode  # pylint: disable=g-import-not-at-top
  if not records:
    return []
  records = list(records)
  return decode.chunks_of_batch(graph(graph_uri).transform(records, source),
                                records, columns, source)
