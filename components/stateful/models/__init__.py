"""The default model module (``default_model``) and its parts:
``hyperparameters``, ``recurrent_models``, ``conv_adapt``, ``head``,
``ridge``, ``row_sampling``. See ``components.stateful``."""
