from .reparameterize import reparameterize

__all__ = ['reparameterize']
