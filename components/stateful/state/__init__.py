"""The state protocol: ``protocol`` (finding, resetting, snapshotting and
checking per-lane state), ``explicit`` (state in and out of the serving
twin), ``resets`` (per-step resets). See ``components.stateful``."""
