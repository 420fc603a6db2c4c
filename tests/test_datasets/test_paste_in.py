"""YOLOv7PasteIn against the official paste_in (``__getitem__``'s sample
loop, ``load_samples``, ``sample_segments``, ``pastein`` of
utils/datasets.py, written out below on the official 2s x 2s canvas) with
the same random state: the same objects pasted at the same places, the
same image; a dataset without polygons is skipped with one log line."""
import random

import cv2
import numpy as np
import pytest
from mmdet.structures.bbox import HorizontalBoxes

from helpers.official_augment import load_image
from helpers.pipeline_data import ListDataset, make_images
from mmyolo_ext.datasets.transforms import YOLOv7PasteIn

S = 128
SIZES = [(200, 150), (128, 96), (90, 128), (160, 160), (128, 128),
         (150, 100)]


# ---- the official code, written out -------------------------------------------
def official_load_samples(index, images, labels, segments, s):
    n = len(images)
    yc, xc = [int(random.uniform(s // 2, 2 * s - s // 2)) for _ in range(2)]
    indices = [index] + random.choices(range(n), k=3)
    labels4, segments4 = [], []
    for i, k in enumerate(indices):
        img = load_image(images[k], s)
        h, w = img.shape[:2]
        if i == 0:
            img4 = np.full((s * 2, s * 2, 3), 114, np.uint8)
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif i == 1:
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, s * 2), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif i == 2:
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(s * 2, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, s * 2), min(s * 2,
                                                                 yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        img4[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
        padw, padh = x1a - x1b, y1a - y1b
        lab = labels[k].copy()
        cx, cy, bw, bh = lab[:, 1], lab[:, 2], lab[:, 3], lab[:, 4]
        lab[:, 1:] = np.stack([w * (cx - bw / 2) + padw,
                               h * (cy - bh / 2) + padh,
                               w * (cx + bw / 2) + padw,
                               h * (cy + bh / 2) + padh], 1)
        labels4.append(lab)
        segments4 += [np.stack([w * x[:, 0] + padw, h * x[:, 1] + padh], 1)
                      for x in segments[k]]
    labels4 = np.concatenate(labels4, 0)
    for x in (labels4[:, 1:], *segments4):
        np.clip(x, 0, 2 * s, out=x)
    # sample_segments(img4, labels4, segments4, probability=0.5)
    out_l, out_i, out_m = [], [], []
    h, w = img4.shape[:2]
    for j in random.sample(range(len(segments4)),
                           k=round(0.5 * len(segments4))):
        l, seg = labels4[j], segments4[j]
        box = (l[1].astype(int).clip(0, w - 1), l[2].astype(int).clip(
            0, h - 1), l[3].astype(int).clip(0, w - 1),
               l[4].astype(int).clip(0, h - 1))
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        out_l.append(l[0])
        mask = np.zeros(img4.shape, np.uint8)
        cv2.drawContours(mask, [seg.astype(np.int32)], -1, (255, 255, 255),
                         cv2.FILLED)
        out_m.append(mask[box[1]:box[3], box[0]:box[2], :])
        result = cv2.bitwise_and(src1=img4, src2=mask)
        i = result > 0
        mask[i] = result[i]
        out_i.append(mask[box[1]:box[3], box[0]:box[2], :])
    return out_l, out_i, out_m


def bbox_ioa(box1, box2):
    box2 = box2.transpose()
    inter = ((np.minimum(box1[2], box2[2]) -
              np.maximum(box1[0], box2[0])).clip(0) *
             (np.minimum(box1[3], box2[3]) -
              np.maximum(box1[1], box2[1])).clip(0))
    return inter / ((box2[2] - box2[0]) * (box2[3] - box2[1]) + 1e-16)


def official_pastein(image, labels, sample_labels, sample_images,
                     sample_masks):
    h, w = image.shape[:2]
    scales = [0.75] * 2 + [0.5] * 4 + [0.25] * 4 + [0.125] * 4 + \
        [0.0625] * 6
    for s in scales:
        if random.random() < 0.2:
            continue
        mask_h = random.randint(1, int(h * s))
        mask_w = random.randint(1, int(w * s))
        xmin = max(0, random.randint(0, w) - mask_w // 2)
        ymin = max(0, random.randint(0, h) - mask_h // 2)
        xmax = min(w, xmin + mask_w)
        ymax = min(h, ymin + mask_h)
        box = np.array([xmin, ymin, xmax, ymax], dtype=np.float32)
        ioa = bbox_ioa(box, labels[:, 1:5]) if len(labels) else np.zeros(1)
        if (ioa < 0.30).all() and len(sample_labels) and (
                xmax > xmin + 20) and (ymax > ymin + 20):
            sel = random.randint(0, len(sample_labels) - 1)
            hs, ws, cs = sample_images[sel].shape
            r_scale = min((ymax - ymin) / hs, (xmax - xmin) / ws)
            r_w, r_h = int(ws * r_scale), int(hs * r_scale)
            if (r_w > 10) and (r_h > 10):
                r_mask = cv2.resize(sample_masks[sel], (r_w, r_h))
                r_image = cv2.resize(sample_images[sel], (r_w, r_h))
                temp_crop = image[ymin:ymin + r_h, xmin:xmin + r_w]
                m_ind = r_mask > 0
                if m_ind.astype(np.int32).sum() > 60:
                    temp_crop[m_ind] = r_image[m_ind]
                    box = np.array([xmin, ymin, xmin + r_w, ymin + r_h],
                                   dtype=np.float32)
                    labels = np.concatenate(
                        (labels, [[sample_labels[sel], *box]]), 0)
                    image[ymin:ymin + r_h, xmin:xmin + r_w] = temp_crop
    return labels


def official_paste_in(img, labels, images, all_labels, segments, s):
    sample_labels, sample_images, sample_masks = [], [], []
    while len(sample_labels) < 30:
        l_, i_, m_ = official_load_samples(
            random.randint(0, len(images) - 1), images, all_labels,
            segments, s)
        sample_labels += l_
        sample_images += i_
        sample_masks += m_
        if len(sample_labels) == 0:
            break
    return official_pastein(img, labels, sample_labels, sample_images,
                            sample_masks)


# ---- the tests ---------------------------------------------------------------------
@pytest.fixture(scope='module')
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp('paste')
    infos, images, labels = make_images(str(folder), SIZES, seed=5,
                                        polygons=True, boxes_per_image=4)
    segments = [[np.array(inst['mask'][0], np.float64).reshape(-1, 2) /
                 (info['width'], info['height'])
                 for inst in info['instances']] for info in infos]
    return infos, images, labels, segments


@pytest.mark.parametrize('seed', range(6))
def test_paste_in_equals_the_official(data, seed):
    infos, images, labels, segments = data
    ds = ListDataset(infos)
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (S, S, 3), np.uint8)
    boxes = np.array([[10, 12, 40, 50], [70, 60, 120, 100]], np.float32)
    classes = np.array([1, 2])
    results = dict(img=img.copy(), gt_bboxes=HorizontalBoxes(boxes),
                   gt_bboxes_labels=classes,
                   gt_ignore_flags=np.zeros(2, bool), dataset=ds)
    random.seed(seed)
    out = YOLOv7PasteIn(prob=1.0, img_scale=(S, S))(results)
    random.seed(seed)
    assert random.random() < 1.0  # __getitem__'s paste_in draw
    ref_img = img.copy()
    ref = official_paste_in(ref_img, np.concatenate(
        [classes[:, None], boxes], 1).astype(np.float64), images, labels,
                            segments, S)
    assert len(ref) > 2  # objects were pasted
    np.testing.assert_array_equal(out['gt_bboxes_labels'], ref[:, 0])
    np.testing.assert_allclose(out['gt_bboxes'].numpy(), ref[:, 1:5])
    np.testing.assert_array_equal(out['img'], ref_img)
    assert len(out['gt_ignore_flags']) == len(ref)


def test_without_polygons_skipped_with_one_log_line(data, monkeypatch):
    from mmyolo_ext.datasets.transforms import paste_in
    infos = [dict(i, instances=[{k: v for k, v in x.items() if k != 'mask'}
                                for x in i['instances']])
             for i in data[0]]
    ds = ListDataset(infos)
    logged = []
    monkeypatch.setattr(paste_in, 'print_log',
                        lambda msg, **kwargs: logged.append(msg))
    t = YOLOv7PasteIn(prob=1.0, img_scale=(S, S))
    img = np.full((S, S, 3), 50, np.uint8)
    for _ in range(3):
        out = t(dict(img=img.copy(), gt_bboxes=HorizontalBoxes(
            np.zeros((0, 4), np.float32)), gt_bboxes_labels=np.zeros(
                0, np.int64), gt_ignore_flags=np.zeros(0, bool), dataset=ds))
        assert len(out['gt_bboxes']) == 0 and (out['img'] == 50).all()
    assert len(logged) == 1 and 'no polygons' in logged[0]


def test_yolo_dataset_keeps_polygon_rows_for_paste_in(tmp_path):
    """YOLO label rows with more than 5 values are polygons: the dataset
    keeps them (pixels, COCO's 'mask' layout), through its label cache too,
    and paste_in samples objects from them."""
    from mmengine.registry import init_default_scope

    from mmyolo_ext.datasets import YOLODataset
    init_default_scope('mmyolo')
    (tmp_path / 'images/train').mkdir(parents=True)
    (tmp_path / 'labels/train').mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = {}
    for i in range(4):
        w, h = 160 + 20 * i, 120
        cv2.imwrite(str(tmp_path / f'images/train/{i}.png'),
                    rng.integers(0, 255, (h, w, 3), np.uint8))
        poly = [0.2, 0.2, 0.6, 0.25, 0.5, 0.7, 0.25, 0.6]
        rows[i] = (w, h, poly)
        (tmp_path / f'labels/train/{i}.txt').write_text(
            f'1 {" ".join(map(str, poly))}\n0 0.7 0.7 0.2 0.3\n')
    (tmp_path / 'data.yaml').write_text('train: images/train\nnc: 2\n'
                                        'names: [a, b]\n')
    for state in ('written', 'loaded'):
        ds = YOLODataset(data_yaml=str(tmp_path / 'data.yaml'), pipeline=[])
        assert ds.scan_summary['cache_state'] == state
        for k in range(len(ds)):
            info = ds.get_data_info(k)
            i = int(osp_stem(info['img_path']))
            w, h, poly = rows[i]
            polygon, box = info['instances']
            expected = (np.array(poly).reshape(-1, 2) * (w, h)).ravel()
            np.testing.assert_allclose(polygon['mask'][0], expected,
                                       atol=1e-4)
            np.testing.assert_allclose(
                polygon['bbox'], [0.2 * w, 0.2 * h, 0.6 * w, 0.7 * h],
                atol=1e-4)
            assert 'mask' not in box
    pasted = []
    for seed in range(10):
        random.seed(seed)
        out = YOLOv7PasteIn(prob=1.0, img_scale=(S, S))(dict(
            img=np.full((S, S, 3), 50, np.uint8),
            gt_bboxes=HorizontalBoxes(np.zeros((0, 4), np.float32)),
            gt_bboxes_labels=np.zeros(0, np.int64),
            gt_ignore_flags=np.zeros(0, bool), dataset=ds))
        pasted += out['gt_bboxes_labels'].tolist()
    assert len(pasted) > 0
    assert set(pasted) == {1}  # objects of the polygon rows only


def osp_stem(path):
    import os.path as osp
    return osp.splitext(osp.basename(path))[0]
