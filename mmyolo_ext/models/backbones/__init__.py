from .elan_backbone import ELANBackbone

__all__ = ['ELANBackbone']
