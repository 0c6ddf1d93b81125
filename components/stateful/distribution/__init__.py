"""Data parallelism: ``lanes`` (the lane rule for every replica and worker),
``replicas`` (replicated steps), ``shards`` (fit-time statistics across
workers). See ``components.stateful``."""
