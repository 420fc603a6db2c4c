"""An exported ONNX model as an MMEngine model, so that ``tools/test.py
CONFIG model.onnx`` evaluates it with the config's dataset and metric."""
import copy
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmengine.model import BaseModel
from torch import Tensor

from mmyolo_ext.models.detectors.yolov7_tta_model import postprocess_decoded
from mmyolo_ext.registry import MODELS
from .onnx_export import head_row_order, read_metadata


@MODELS.register_module()
class ONNXRuntimeDetector(BaseModel):
    """Runs an ``--nms none`` export (decoded ``(bs, N, 5 + nc)``) in
    onnxruntime and post-processes it as the PyTorch model does: the
    config head's ``test_cfg`` (score threshold, multi-label top-k, NMS,
    max detections) and the letterbox undone, through the same function as
    the PyTorch test-time path (:func:`postprocess_decoded`), so the mAP is
    comparable.

    The graph takes RGB in [0, 1] (it applies any other normalization
    itself), so the data preprocessor here keeps the config's batching and
    channel order but only scales by 1/255.

    Args:
        onnx_file (str): The exported model (``tools/deployment/export_onnx.py``).
        detector (dict): The config's model: its ``bbox_head`` and
            ``test_cfg`` give the post-processing, its ``data_preprocessor``
            the batching.
        providers (Sequence[str], optional): onnxruntime execution
            providers; default: CUDA when available, else CPU.
        num_threads (int, optional): onnxruntime intra-op threads.
    """

    def __init__(self,
                 onnx_file: str,
                 detector: dict,
                 providers: Optional[Sequence[str]] = None,
                 num_threads: Optional[int] = None,
                 init_cfg=None) -> None:
        preprocessor = copy.deepcopy(dict(detector['data_preprocessor']))
        preprocessor.update(mean=[0., 0., 0.], std=[255., 255., 255.])
        super().__init__(data_preprocessor=preprocessor, init_cfg=init_cfg)
        head_cfg = copy.deepcopy(dict(detector['bbox_head']))
        head_cfg.update(loss=None, test_cfg=detector.get('test_cfg'))
        self.bbox_head = MODELS.build(head_cfg)  # post-processing only
        self.onnx_file = onnx_file
        num_outputs = self.open_runtime(onnx_file, providers, num_threads)
        if isinstance(num_outputs, int) and (num_outputs - 5 !=
                                             self.bbox_head.num_classes):
            raise ValueError(
                f'{onnx_file} predicts {num_outputs - 5} classes, the '
                f'config {self.bbox_head.num_classes}')

    def open_runtime(self, onnx_file: str,
                     providers: Optional[Sequence[str]],
                     num_threads: Optional[int]):
        """Open the model in onnxruntime; set ``input_name``,
        ``input_shape`` (ints, or names where dynamic), ``input_dtype``;
        return the output's last dimension (5 + nc)."""
        import onnxruntime as ort
        metadata = read_metadata(onnx_file)
        if metadata.get('nms', 'none') != 'none':
            raise ValueError(
                f"{onnx_file} was exported with --nms {metadata['nms']}: its "
                'NMS (single-label, its own thresholds) is not the '
                "evaluation's; export with --nms none (and --dynamic all "
                'for rect batches) to evaluate it')
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        available = ort.get_available_providers()
        providers = providers or [
            p for p in ('CUDAExecutionProvider', 'CPUExecutionProvider')
            if p in available
        ]
        self.session = ort.InferenceSession(
            onnx_file, options, providers=list(providers))
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.input_shape = graph_input.shape  # ints, or names when dynamic
        self.input_dtype = (np.float16 if graph_input.type ==
                            'tensor(float16)' else np.float32)
        return self.session.get_outputs()[0].shape[-1]

    def _check_shape(self, inputs: Tensor) -> None:
        for axis, (want, got) in enumerate(
                zip(self.input_shape[1:], inputs.shape[1:]), start=1):
            if isinstance(want, int) and want != got:
                raise ValueError(
                    f'{self.onnx_file} takes inputs of shape '
                    f'{self.input_shape}, the test pipeline gave a batch of '
                    f'{tuple(inputs.shape)}: export with --dynamic all (rect '
                    'validation batches vary in size) or with --img-size '
                    'matching the batches')

    def run(self, inputs: Tensor) -> Tensor:
        """The graph's ``(bs, N, 5 + nc)`` output for a ``(bs, 3, H, W)``
        batch (image by image for a graph of static batch 1)."""
        self._check_shape(inputs)
        # C order: a channels_last batch's array has other strides, which
        # OpenVINO would read as if it were C-ordered
        batch = np.ascontiguousarray(
            inputs.detach().cpu().numpy().astype(self.input_dtype))
        static_batch = self.input_shape[0]
        if isinstance(static_batch, int) and static_batch != len(batch):
            if static_batch != 1:
                raise ValueError(
                    f'{self.onnx_file} has a static batch of {static_batch}, '
                    f'the test batch holds {len(batch)} images: export with '
                    '--dynamic batch (or all)')
            outs = [self.infer(image[None]) for image in batch]
            out = np.concatenate(outs)
        else:
            out = self.infer(batch)
        return torch.from_numpy(out.astype(np.float32))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The runtime's ``(bs, N, 5 + nc)`` output for one input batch."""
        return self.session.run(None, {self.input_name: batch})[0]

    def head_ordered(self, rows: Tensor, input_size) -> Tensor:
        """The exported rows (official order) in the PyTorch head's order
        (:func:`head_row_order`), so that the post-processing is the same
        computation as the PyTorch model's, score ties included."""
        head = self.bbox_head
        sizes = [(int(input_size[0]) // s, int(input_size[1]) // s)
                 for s in head.featmap_strides]
        return head_row_order(rows, sizes, head.num_base_priors)

    def forward(self,
                inputs: Tensor,
                data_samples: Optional[List[DetDataSample]] = None,
                mode: str = 'predict') -> Union[Tensor, List[DetDataSample]]:
        if mode == 'tensor':
            return self.run(inputs)
        if mode != 'predict':
            raise ValueError(f'ONNXRuntimeDetector only predicts, got mode '
                             f'{mode!r}')
        rows = self.head_ordered(self.run(inputs), inputs.shape[2:])
        boxes = torch.cat([rows[..., :2] - rows[..., 2:4] / 2,
                           rows[..., :2] + rows[..., 2:4] / 2], dim=-1)
        for i, sample in enumerate(data_samples):
            sample.pred_instances = postprocess_decoded(
                self.bbox_head, boxes[i], rows[i, :, 4:], sample.metainfo)
        return data_samples


def onnx_test_config(cfg, onnx_file: str):
    """``cfg`` with its model replaced by :class:`ONNXRuntimeDetector` over
    ``onnx_file`` (no checkpoint to load)."""
    from mmengine.config import ConfigDict
    cfg.model = ConfigDict(
        type='mmyolo_ext.ONNXRuntimeDetector',
        onnx_file=onnx_file,
        detector=cfg.model)
    cfg.load_from = None
    return cfg
