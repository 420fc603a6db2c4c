from . import compat  # noqa: F401  (applies the fixes on import)
from .reparameterize_hook import ReparameterizeHook

__all__ = ['ReparameterizeHook']
