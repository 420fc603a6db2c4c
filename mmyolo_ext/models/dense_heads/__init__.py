from .idetect_head import IDetectHead
from .idetect_head_module import IDetectHeadModule

__all__ = ['IDetectHead', 'IDetectHeadModule']
