"""The evaluator's first stage: the compared models loaded stateful and the
chunked pass over the eval split, one TFMA example per sequence or step
group (``models``, ``chunked``, ``extracts``)."""
