"""ArchScope core: pure Python + PyTorch. Never imports streamlit."""

__version__ = "0.1.0"

# The environment variable naming students' model files (core/models/user_models.py). Here, in the
# package root, because importing core.models imports torch, and the dashboard's sidebar and the
# params/MACs disk cache (core/analysis/cost_cache.py) need the name without waiting for torch.
MODEL_FILES_ENV = "ARCHSCOPE_MODELS"
