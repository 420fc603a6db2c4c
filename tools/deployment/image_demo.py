"""Detect objects on images, folders of images and videos.

MMDetection 3.3's ``DetInferencer`` (its pipeline, batching, visualizer and
``preds/*.json`` files) with the model loaded by
:func:`mmyolo_ext.deploy.load_detector`, so a deploy checkpoint
(``tools/model_converters/reparameterize.py``) loads as it is. Outputs under ``--out-dir``:

* ``vis/<name>``: the image with boxes, class names and scores drawn
  (``vis/<video stem>.mp4`` for a video, at the video's fps);
* ``preds/<stem>.json``: mmdet's prediction file (``labels``, ``scores``,
  ``bboxes`` x1 y1 x2 y2 in original image pixels), one per image / frame;
* with ``--save-txt``, ``labels/<stem>.txt``: the official ``detect.py
  --save-txt --save-conf`` rows ``class cx cy w h conf`` (normalized by the
  original image size) of the detections scoring above ``--pred-score-thr``;
  video frames are ``<stem>_<frame>`` (frames counted from 1), as there.

Example::

    python tools/deployment/image_demo.py demo/ configs/yolov7_tiny_demo.py \\
        --weights work_dirs/yolov7_tiny_demo/epoch_12.pth --save-txt
    # the same through an export: ONNX (onnxruntime) or OpenVINO IR
    python tools/deployment/image_demo.py video.mp4 configs/yolov7_tiny_demo.py \\
        --weights int8.xml
"""
import argparse
import copy
import math
import os
import os.path as osp
import sys
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmdet.apis import DetInferencer
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.dataset import Compose
from rich.progress import track

from mmyolo_ext.deploy import load_detector
from mmyolo_ext.utils.cli import require_checkpoint_file

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp',
                  '.dng', '.mpo', '.ppm', '.pgm')
VIDEO_EXTENSIONS = ('.mp4', '.mov', '.avi', '.mkv', '.m4v', '.mpg', '.mpeg',
                    '.wmv', '.webm', '.gif')


class YOLOv7Inferencer(DetInferencer):
    """:class:`DetInferencer` with :func:`load_detector`'s model, inputs that
    fail to load skipped (and recorded in :attr:`failed`), and video frames.

    Args:
        model (str | Config): Config file path or object.
        weights (str, optional): Checkpoint (training or deploy).
        device (str, optional): Device; None picks CUDA when available.
        deploy (bool): Re-parameterize a training checkpoint after loading.
        channels_last (bool): Run the model in the channels-last memory
            format.
        show_progress (bool): mmdet's own progress bar (off: :func:`detect`
            draws one over all inputs).
    """

    def __init__(self,
                 model,
                 weights: Optional[str] = None,
                 device: Optional[str] = None,
                 deploy: bool = False,
                 channels_last: bool = False,
                 show_progress: bool = False) -> None:
        self.deploy = deploy
        self.channels_last = channels_last
        self.failed: List[Tuple[str, str]] = []  # (input name, reason)
        cfg = Config.fromfile(model) if isinstance(model, str) else model
        super().__init__(
            model=cfg,
            weights=weights,
            device=device,
            scope=cfg.get('default_scope', 'mmyolo'),
            show_progress=show_progress)

    def _init_model(self, cfg: Config, weights: Optional[str],
                    device: str = 'cpu') -> torch.nn.Module:
        if str(weights).endswith(('.onnx', '.xml')):
            model = exported_model(cfg, weights)
        else:
            model = load_detector(cfg, weights, device=device,
                                  deploy=self.deploy)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if model.dataset_meta is None:
            raise ValueError('no class names: neither the checkpoint meta '
                             'nor the config test dataset declares them')
        model.dataset_meta.setdefault('palette', 'random')  # as mmdet does
        return model

    def _init_pipeline(self, cfg: Config):
        """The config's test pipeline with its image loader (mmcv's
        ``LoadImageFromFile`` or a subclass such as our tolerant one)
        replaced by mmdet's ``InferencerLoader`` (paths and arrays; a file
        that fails to load raises, and is reported by
        :meth:`_get_chunk_data`)."""
        pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
        loaders = [
            i for i, t in enumerate(pipeline)
            if str(t['type']).split('.')[-1].endswith('LoadImageFromFile')
        ]
        if not loaders:
            raise ValueError('the test pipeline of the config has no '
                             'LoadImageFromFile step to replace')
        pipeline[loaders[0]] = dict(type='mmdet.InferencerLoader')
        if 'meta_keys' in pipeline[-1]:  # no img_id at inference (as mmdet)
            pipeline[-1]['meta_keys'] = tuple(
                k for k in pipeline[-1]['meta_keys'] if k != 'img_id')
        return Compose(pipeline)

    def forward(self, inputs, **kwargs):
        if self.channels_last:
            inputs = self._to_channels_last(inputs)
        return super().forward(inputs, **kwargs)

    @staticmethod
    def _to_channels_last(data: dict) -> dict:
        data = dict(data)
        data['inputs'] = [
            img.contiguous(memory_format=torch.channels_last)
            if img.dim() == 4 else img for img in data['inputs']
        ]
        return data

    def _get_chunk_data(self, inputs: Iterable, chunk_size: int) -> Iterator:
        """Chunks of ``(input, pipeline result)``; an input the pipeline
        cannot load is recorded and left out instead of ending the run."""
        chunk = []
        for item in inputs:
            name = item if isinstance(item, str) else f'array {item.shape}'
            try:
                data = self.pipeline(item)
            except Exception as error:  # unreadable / corrupt file
                self.failed.append((name, f'{type(error).__name__}: {error}'))
                continue
            if data is None:
                self.failed.append((name, 'the loader returned nothing'))
                continue
            chunk.append((item, data))
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def exported_model(cfg: Config, model_file: str) -> torch.nn.Module:
    """An ``--nms none`` ONNX export (onnxruntime) or an OpenVINO IR, with
    the config's post-processing and class names (the evaluator models of
    ``tools/test.py``)."""
    from mmyolo_ext.deploy.checkpoint import _dataset_meta_from_config
    from mmyolo_ext.deploy.onnxruntime_detector import ONNXRuntimeDetector
    from mmyolo_ext.deploy.openvino_detector import OpenVINODetector
    runtime = (OpenVINODetector
               if model_file.endswith('.xml') else ONNXRuntimeDetector)
    model = runtime(model_file, cfg.model).eval()
    model.cfg = cfg
    model.dataset_meta = _dataset_meta_from_config(cfg)
    return model


def yolo_txt_rows(pred: DetDataSample, score_thr: float) -> List[str]:
    """The official ``detect.py --save-txt --save-conf`` rows of a prediction:
    ``class cx cy w h conf``, the box normalized by the original image size,
    for the detections scoring above ``score_thr``."""
    height, width = pred.ori_shape[:2]
    instances = pred.pred_instances
    keep = instances.scores > score_thr
    boxes = instances.bboxes[keep].float().cpu()
    gain = boxes.new_tensor([width, height, width, height])
    xywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2,
                      boxes[:, 2:] - boxes[:, :2]], dim=1) / gain
    labels = instances.labels[keep].tolist()
    scores = instances.scores[keep].tolist()
    return [
        ' '.join(f'{v:g}' for v in (label, *box, score))
        for label, box, score in zip(labels, xywh.tolist(), scores)
    ]


def collect_inputs(inputs: str) -> Tuple[List[str], List[str], List[str]]:
    """Images, videos and skipped files (neither) of a file or a folder."""
    if osp.isdir(inputs):
        files = sorted(
            osp.join(inputs, name) for name in os.listdir(inputs)
            if osp.isfile(osp.join(inputs, name)))
    elif osp.isfile(inputs):
        files = [inputs]
    else:
        raise FileNotFoundError(f'{inputs}: no such file or folder')
    images, videos, others = [], [], []
    for path in files:
        ext = osp.splitext(path)[1].lower()
        (images if ext in IMG_EXTENSIONS else
         videos if ext in VIDEO_EXTENSIONS else others).append(path)
    return images, videos, others


class _Writer:
    """Writes the per-image outputs: drawn image, JSON, txt rows."""

    def __init__(self, inferencer: YOLOv7Inferencer, out_dir: str,
                 score_thr: float, save_txt: bool, show: bool) -> None:
        self.inferencer = inferencer
        self.out_dir = out_dir
        self.score_thr = score_thr
        self.save_txt = save_txt
        self.show = show
        if save_txt:
            os.makedirs(osp.join(out_dir, 'labels'), exist_ok=True)

    def predictions(self, preds: Sequence[DetDataSample],
                    stems: Sequence[str]) -> None:
        for pred, stem in zip(preds, stems):
            # mmdet names preds/<stem>.json after the sample's img_path
            pred.set_metainfo(dict(img_path=stem + '.jpg'))
        self.inferencer.postprocess(preds, pred_out_dir=self.out_dir)
        if self.save_txt:
            for pred, stem in zip(preds, stems):
                rows = yolo_txt_rows(pred, self.score_thr)
                with open(osp.join(self.out_dir, 'labels', stem + '.txt'),
                          'w') as f:
                    f.writelines(row + '\n' for row in rows)

    def draw(self, name: str, rgb: np.ndarray, pred: DetDataSample,
             out_file: Optional[str]) -> np.ndarray:
        visualizer = self.inferencer.visualizer
        visualizer.add_datasample(
            name,
            rgb,
            pred,
            show=self.show,
            wait_time=0 if out_file else 0.001,
            draw_gt=False,
            pred_score_thr=self.score_thr,
            out_file=out_file)
        return visualizer.get_image()


def detect_images(inferencer: YOLOv7Inferencer, writer: _Writer,
                  images: List[str], batch_size: int) -> int:
    """Detect on image files, ``batch_size`` per forward; returns how many
    were processed."""
    done = 0
    chunks = inferencer.preprocess(images, batch_size=batch_size)
    for ori_inputs, data in track(
            chunks,
            total=math.ceil(len(images) / batch_size),
            description=f'{len(images)} images'):
        preds = inferencer.forward(data)
        for path, pred in zip(ori_inputs, preds):
            rgb = cv2.imread(path, cv2.IMREAD_COLOR)[:, :, ::-1]
            writer.draw(
                osp.basename(path), rgb, pred,
                osp.join(writer.out_dir, 'vis', osp.basename(path)))
        writer.predictions(
            preds, [osp.splitext(osp.basename(p))[0] for p in ori_inputs])
        done += len(preds)
    return done


def read_frames(capture: cv2.VideoCapture,
                batch_size: int) -> Iterator[List[np.ndarray]]:
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
        if len(frames) == batch_size:
            yield frames
            frames = []
    if frames:
        yield frames


def detect_video(inferencer: YOLOv7Inferencer, writer: _Writer, path: str,
                 batch_size: int) -> int:
    """Detect on every frame of a video and write it back drawn, at its
    fps; returns the number of frames (0: not readable)."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        inferencer.failed.append((path, 'OpenCV cannot open the video'))
        return 0
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    stem = osp.splitext(osp.basename(path))[0]
    out_path = osp.join(writer.out_dir, 'vis', stem + '.mp4')
    os.makedirs(osp.dirname(out_path), exist_ok=True)
    video_writer = None
    frame_index = 0
    try:
        for frames in track(
                read_frames(capture, batch_size),
                total=math.ceil(total / batch_size) if total else None,
                description=f'{osp.basename(path)} ({total or "?"} frames)'):
            chunk = next(inferencer.preprocess(frames, batch_size=len(frames)))
            _, data = chunk
            preds = inferencer.forward(data)
            stems = []
            for frame, pred in zip(frames, preds):
                frame_index += 1
                stems.append(f'{stem}_{frame_index}')
                drawn = writer.draw(stems[-1], frame[:, :, ::-1], pred, None)
                if video_writer is None:
                    height, width = drawn.shape[:2]
                    video_writer = cv2.VideoWriter(
                        out_path, cv2.VideoWriter_fourcc(*'mp4v'), fps,
                        (width, height))
                video_writer.write(np.ascontiguousarray(drawn[:, :, ::-1]))
            writer.predictions(preds, stems)
    finally:
        capture.release()
        if video_writer is not None:
            video_writer.release()
    if frame_index == 0:
        inferencer.failed.append((path, 'no frame could be decoded'))
    return frame_index


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Detect objects on images, image folders and videos')
    parser.add_argument(
        'inputs', help='an image file, a folder of images, or a video file')
    parser.add_argument('model', help='config file of the model')
    parser.add_argument(
        '--weights', required=True,
        help='checkpoint (training, or deploy from tools/model_converters/'
        'reparameterize.py), or an exported model: .onnx (export_onnx.py '
        '--nms none --dynamic all) or OpenVINO .xml (export_openvino.py)')
    parser.add_argument(
        '--out-dir', default='outputs', help='output folder')
    parser.add_argument(
        '--device',
        default='cuda:0' if torch.cuda.is_available() else 'cpu',
        help='device, e.g. cpu or cuda:0')
    parser.add_argument(
        '--pred-score-thr', type=float, default=0.3,
        help='score above which detections are drawn and written as txt')
    parser.add_argument(
        '--batch-size', type=int, default=1, help='images per forward')
    parser.add_argument(
        '--deploy',
        action=argparse.BooleanOptionalAction,
        default=True,
        help='re-parameterize a training checkpoint after loading (default; '
        'the same detections, faster); --no-deploy runs the training graph')
    parser.add_argument(
        '--channels-last',
        action=argparse.BooleanOptionalAction,
        default=True,
        help='run the model in the channels-last memory format (default: '
        'the fastest CPU variant in benchmarks/deploy.py, same '
        'detections)')
    parser.add_argument(
        '--save-txt', action='store_true',
        help='write the official detect.py --save-txt --save-conf rows')
    parser.add_argument(
        '--show', action='store_true', help='show the drawn images')
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    require_checkpoint_file(args.weights)
    images, videos, others = collect_inputs(args.inputs)
    for path in others:
        print(f'skipped {path}: not an image or video file extension',
              file=sys.stderr)
    inferencer = YOLOv7Inferencer(
        args.model,
        args.weights,
        device=args.device,
        deploy=args.deploy,
        channels_last=args.channels_last)
    writer = _Writer(inferencer, args.out_dir, args.pred_score_thr,
                     args.save_txt, args.show)
    done = 0
    if images:
        done += detect_images(inferencer, writer, images, args.batch_size)
    for path in videos:
        done += detect_video(inferencer, writer, path, args.batch_size)
    for name, reason in inferencer.failed:
        print(f'skipped {name}: {reason}', file=sys.stderr)
    print(f'{done} images / frames processed, {len(inferencer.failed)} '
          f'inputs skipped; results in {args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
