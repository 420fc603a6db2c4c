"""OpenVINO IR export of a YOLOv7 detector: FP32, FP16 and INT8.

The IR is converted (``openvino.convert_model``) from the ``--nms none``
ONNX export (:func:`export_onnx`): the re-parameterized model, input
``images`` RGB in [0, 1] letterboxed, output ``(bs, N, 5 + nc)`` decoded
rows in the official order. FP16 stores the weights in half precision (the
CPU plugin computes in float32 unless told otherwise). INT8 is NNCF
post-training quantization (``nncf.quantize``, mixed preset: symmetric
weights, asymmetric activations), calibrated on the user's own training
images letterboxed by the config's test pipeline
(:func:`calibration_images`). The detect head's output convs and the whole
decode (sigmoid, grid, anchors, the reordering) stay in float
(:data:`FLOAT_SCOPE`), as Ultralytics keeps its head's last convs and box
decode: their outputs are the boxes and scores themselves, and 8 bits over
the range of a box logit moves boxes by pixels.
"""
import json
import re
import os
import os.path as osp
import tempfile
from typing import Iterable, Optional, Sequence

import numpy as np
import torch.nn as nn

from .onnx_export import export_onnx, read_metadata

PRECISIONS = ('fp32', 'fp16', 'int8')
# node-name patterns (NNCF IgnoredScope) of what stays float in INT8: the
# head module (its 1x1 output convs) and everything after it in the graph
# (the decode and the row reordering of ExportedDetector.forward)
FLOAT_SCOPE = ('.*bbox_head.*', )
METADATA_FILE_SUFFIX = '.json'


def export_openvino(detector: nn.Module,
                    out_xml: str,
                    img_size: Sequence[int] = (640, 640),
                    precision: str = 'fp32',
                    calibration: Optional[Iterable[np.ndarray]] = None,
                    subset_size: int = 300,
                    class_names: Optional[Sequence[str]] = None) -> str:
    """Export a YOLOv7 detector to an OpenVINO IR (``.xml`` + ``.bin``).

    Args:
        detector (nn.Module): The detector; re-parameterized in place.
        out_xml (str): Path of the ``.xml`` file.
        img_size (Sequence[int]): Static input ``(height, width)``.
        precision (str): ``'fp32'``, ``'fp16'`` (half weights) or
            ``'int8'`` (NNCF post-training quantization).
        calibration (Iterable[np.ndarray], optional): INT8 only: ``(3, H,
            W)`` float32 RGB [0, 1] letterboxed images of the input size
            (:func:`calibration_images`).
        subset_size (int): INT8 only: images NNCF calibrates on.
        class_names (Sequence[str], optional): Stored in the metadata.

    Returns:
        str: ``out_xml``.
    """
    import openvino as ov
    if precision not in PRECISIONS:
        raise ValueError(
            f'precision must be one of {PRECISIONS}, got {precision!r}')
    if precision == 'int8' and calibration is None:
        raise ValueError('INT8 needs calibration images (--calib-data)')
    if not out_xml.endswith('.xml'):
        raise ValueError(f'{out_xml}: the IR file must end in .xml')
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = osp.join(tmp, 'model.onnx')
        # traced with symbolic sizes, then fixed to img_size: the IR keeps
        # its shape arithmetic, so it can be reshaped to other sizes
        # (OpenVINODetector does, for rect validation batches)
        export_onnx(detector, onnx_file, img_size=img_size, nms='none',
                    dynamic='all', class_names=class_names)
        metadata = read_metadata(onnx_file)
        model = ov.convert_model(onnx_file)
    height, width = (int(s) for s in img_size)
    model.reshape([1, 3, height, width])
    metadata.update(dynamic=None)
    if precision == 'int8':
        model = quantize_int8(model, calibration, subset_size)
    metadata.update(precision=precision)
    model.set_rt_info(json.dumps(metadata), ['model_info', 'mmyolo_ext'])
    os.makedirs(osp.dirname(osp.abspath(out_xml)), exist_ok=True)
    ov.save_model(model, out_xml, compress_to_fp16=precision == 'fp16')
    return out_xml


def quantize_int8(model, calibration: Iterable[np.ndarray],
                  subset_size: int = 300):
    """NNCF post-training INT8 quantization of an OpenVINO model, with the
    head's output convs and the decode kept in float (:data:`FLOAT_SCOPE`).
    """
    import nncf
    images = [np.asarray(image, dtype=np.float32) for image in calibration]
    if not images:
        raise ValueError('no calibration images')
    dataset = nncf.Dataset(images, lambda image: image[None])
    return nncf.quantize(
        model,
        dataset,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=min(subset_size, len(images)),
        ignored_scope=float_scope(model))


def float_scope(model):
    """NNCF's ignored scope of an exported detector: the head's nodes (its
    output convs, :data:`FLOAT_SCOPE`) and every node between them and the
    output (the decode: sigmoid, grid and anchor arithmetic, reordering)."""
    import nncf
    head_nodes = [
        op.get_friendly_name() for op in model.get_ordered_ops()
        if re.fullmatch(FLOAT_SCOPE[0], op.get_friendly_name())
    ]
    head_convs = [
        op.get_friendly_name() for op in model.get_ordered_ops()
        if op.get_type_name() == 'Convolution'
        and op.get_friendly_name() in head_nodes
    ]
    if not head_convs:
        raise ValueError('no Convolution named like the detect head '
                         f'({FLOAT_SCOPE[0]}) in the model: the float scope '
                         'would be empty')
    outputs = [
        result.input_value(0).get_node().get_friendly_name()
        for result in model.get_results()
    ]
    return nncf.IgnoredScope(
        names=head_nodes,
        subgraphs=[nncf.Subgraph(inputs=head_convs, outputs=outputs)])


def read_openvino_metadata(xml_file: str) -> dict:
    """The export settings stored in an IR by :func:`export_openvino` (empty
    for an IR exported otherwise)."""
    import openvino as ov
    model = ov.Core().read_model(xml_file)
    if not model.has_rt_info(['model_info', 'mmyolo_ext']):
        return {}
    return json.loads(
        model.get_rt_info(['model_info', 'mmyolo_ext']).astype(str))
