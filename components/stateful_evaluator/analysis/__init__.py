"""The evaluator's TFMA stage: TensorFlow Model Analysis over the extracts,
in this process or on Beam, and its output read back (``config``,
``metrics``, ``in_process``, ``histograms``, ``beam_run``, ``results``;
the TFMA internals the in-process path uses: ``tfma_internals``). Named
``analysis`` rather than ``tfma`` so it does not shadow the ``tfma``
package."""
