"""The default model module (``default_model``) and its parts:
``hyperparameters``, ``recurrent_models``, ``conv_adapt`` with
``adapt_passes``, ``ppv_thresholds`` and ``head_rows``, ``head``,
``ridge``, ``row_sampling``. See ``components.stateful``."""
