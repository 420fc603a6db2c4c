from .checkpoint import (is_deploy_checkpoint, load_detector,
                         read_checkpoint)
from .onnxruntime_detector import ONNXRuntimeDetector
from .official_weights import (ConversionReport, convert_official_state_dict,
                               load_official_state_dict)
from .reparameterize import reparameterize

__all__ = [
    'reparameterize', 'load_official_state_dict',
    'convert_official_state_dict', 'ConversionReport', 'load_detector',
    'is_deploy_checkpoint', 'read_checkpoint', 'ONNXRuntimeDetector'
]
