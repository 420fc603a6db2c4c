"""An exported OpenVINO IR as an MMEngine model, so that ``tools/test.py
CONFIG model.xml`` evaluates it with the config's dataset and metric."""
from typing import Optional, Sequence

import numpy as np

from mmyolo_ext.registry import MODELS
from .onnxruntime_detector import ONNXRuntimeDetector


@MODELS.register_module()
class OpenVINODetector(ONNXRuntimeDetector):
    """Runs an OpenVINO IR (``tools/deployment/export_openvino.py``: FP32,
    FP16 or INT8, decoded ``(bs, N, 5 + nc)`` rows) on the OpenVINO CPU
    plugin and post-processes it as :class:`ONNXRuntimeDetector` does (the
    PyTorch model's test-time post-processing).

    The IR is exported at one input size; each other batch shape met (rect
    validation batches) gets the model reshaped and compiled once for it
    (the convolutions and the decode do not depend on the size).

    Args:
        xml_file (str): The IR's ``.xml``.
        detector (dict): The config's model (post-processing, batching).
        device (str): OpenVINO device; default ``'CPU'``.
        num_threads (int, optional): CPU inference threads.
    """

    def __init__(self,
                 xml_file: str,
                 detector: dict,
                 device: str = 'CPU',
                 num_threads: Optional[int] = None,
                 init_cfg=None) -> None:
        self.ov_device = device
        super().__init__(xml_file, detector, num_threads=num_threads,
                         init_cfg=init_cfg)

    def open_runtime(self, xml_file: str, providers: Optional[Sequence[str]],
                     num_threads: Optional[int]):
        import openvino as ov
        self.core = ov.Core()
        self.model = self.core.read_model(xml_file)
        self.config = {}
        if num_threads:
            self.config['INFERENCE_NUM_THREADS'] = int(num_threads)
        graph_input = self.model.inputs[0]
        self.input_name = graph_input.get_any_name()
        # any size: the model is reshaped to each batch's shape (infer)
        self.input_shape = [
            'batch', int(graph_input.get_partial_shape()[1].get_length()),
            'height', 'width'
        ]
        self.input_dtype = np.float32  # FP16 IRs take float32 inputs too
        self.compiled = {}
        return self.model.outputs[0].get_partial_shape()[-1].get_length()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        shape = tuple(batch.shape)
        if shape not in self.compiled:
            model = self.model.clone()
            model.reshape({self.input_name: list(shape)})
            self.compiled[shape] = self.core.compile_model(
                model, self.ov_device, self.config)
        compiled = self.compiled[shape]
        return compiled(batch)[compiled.outputs[0]]


def openvino_test_config(cfg, xml_file: str):
    """``cfg`` with its model replaced by :class:`OpenVINODetector` over
    ``xml_file`` (no checkpoint to load)."""
    from mmengine.config import ConfigDict
    cfg.model = ConfigDict(
        type='mmyolo_ext.OpenVINODetector', xml_file=xml_file,
        detector=cfg.model)
    cfg.load_from = None
    return cfg
