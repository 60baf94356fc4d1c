"""Model zoo: ``create_model(name, num_classes, in_channels, **options)``; ``python -m core.models`` lists it.

Students' model files join it through ARCHSCOPE_MODELS (core/models/user_models.py); the ones that
could not be loaded are in ``user_model_problems()``.
"""

from core.models.registry import (  # noqa: F401
    ModelSpec,
    UnknownModelError,
    create_model,
    get_spec,
    list_models,
    register_model,
    user_model_problems,
)
