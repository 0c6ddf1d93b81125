"""The project's stateful layers: ``base`` (``StatefulLayer``, ``PlainCall``)
and one file per family: ``convolution``, ``pools``, ``lru`` (with its
``scans``), ``elementwise``. See ``components.stateful``."""
