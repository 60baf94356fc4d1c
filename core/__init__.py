"""ArchScope core: pure Python + PyTorch. Never imports streamlit."""

__version__ = "0.1.0"
