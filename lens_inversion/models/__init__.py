"""The embedded default model and the model loader."""

from .loader import load_model as load_model
