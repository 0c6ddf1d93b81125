"""The evaluator's checks besides TFMA's thresholds: chunked ==
whole-sequence serving (``equivalence``) and the no-skill gate's
significance test (``no_skill_gate``)."""
