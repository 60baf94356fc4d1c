"""Model zoo: ``create_model(name, num_classes, in_channels, **options)``; ``python -m core.models`` lists it."""

from core.models.registry import (  # noqa: F401
    ModelSpec,
    UnknownModelError,
    create_model,
    get_spec,
    list_models,
    register_model,
)
