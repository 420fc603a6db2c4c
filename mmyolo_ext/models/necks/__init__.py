from .sppcspc_neck import SPPCSPCNeck

__all__ = ['SPPCSPCNeck']
