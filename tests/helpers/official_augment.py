"""The official YOLOv7 training geometry written out plainly, from
WongKinYiu/yolov7 utils/datasets.py (``load_image``, ``load_mosaic``,
``load_mosaic9``, ``letterbox``, ``random_perspective``,
``box_candidates``, ``augment_hsv``): the canvas is built, then warped. Independent of
mmyolo_ext's transforms (the reference the fused ones are tested against);
the random draws are given, not drawn."""
import math

import cv2
import numpy as np


def load_image(img, s):
    h0, w0 = img.shape[:2]
    r = s / max(h0, w0)
    if r != 1:  # training: INTER_LINEAR both ways
        img = cv2.resize(img, (int(w0 * r), int(h0 * r)),
                         interpolation=cv2.INTER_LINEAR)
    return img


def xywhn2xyxy(x, w, h, padw, padh):
    y = np.copy(x)
    y[:, 0] = w * (x[:, 0] - x[:, 2] / 2) + padw
    y[:, 1] = h * (x[:, 1] - x[:, 3] / 2) + padh
    y[:, 2] = w * (x[:, 0] + x[:, 2] / 2) + padw
    y[:, 3] = h * (x[:, 1] + x[:, 3] / 2) + padh
    return y


def mosaic4(imgs, labels, s, xc, yc):
    """imgs: originals; labels: (n, 5) class cx cy w h normalized. Returns
    the 2s canvas, (n, 5) class xyxy, and per-image canvas rectangles."""
    out, rects = [], []
    for i, (im0, lab) in enumerate(zip(imgs, labels)):
        img = load_image(im0, s)
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
        lab = lab.copy()
        if len(lab):
            lab[:, 1:] = xywhn2xyxy(lab[:, 1:], w, h, x1a - x1b, y1a - y1b)
        out.append(lab)
        rects.append((x1a, y1a, x2a, y2a))
    lab4 = np.concatenate(out, 0)
    np.clip(lab4[:, 1:], 0, 2 * s, out=lab4[:, 1:])
    return img4, lab4, rects


def mosaic9(imgs, labels, s, xc, yc):
    out, rects = [], []
    for i, (im0, lab) in enumerate(zip(imgs, labels)):
        img = load_image(im0, s)
        h, w = img.shape[:2]
        if i == 0:
            img9 = np.full((s * 3, s * 3, 3), 114, np.uint8)
            h0, w0 = h, w
            c = s, s, s + w, s + h
        elif i == 1:
            c = s, s - h, s + w, s
        elif i == 2:
            c = s + wp, s - h, s + wp + w, s
        elif i == 3:
            c = s + w0, s, s + w0 + w, s + h
        elif i == 4:
            c = s + w0, s + hp, s + w0 + w, s + hp + h
        elif i == 5:
            c = s + w0 - w, s + h0, s + w0, s + h0 + h
        elif i == 6:
            c = s + w0 - wp - w, s + h0, s + w0 - wp, s + h0 + h
        elif i == 7:
            c = s - w, s + h0 - h, s, s + h0
        else:
            c = s - w, s + h0 - hp - h, s, s + h0 - hp
        padx, pady = c[:2]
        x1, y1, x2, y2 = [max(x, 0) for x in c]
        lab = lab.copy()
        if len(lab):
            lab[:, 1:] = xywhn2xyxy(lab[:, 1:], w, h, padx, pady)
        out.append(lab)
        img9[y1:y2, x1:x2] = img[y1 - pady:, x1 - padx:]
        rects.append((x1 - xc, y1 - yc, x2 - xc, y2 - yc))
        hp, wp = h, w
    img9 = img9[yc:yc + 2 * s, xc:xc + 2 * s]
    lab9 = np.concatenate(out, 0)
    lab9[:, [1, 3]] -= xc
    lab9[:, [2, 4]] -= yc
    np.clip(lab9[:, 1:], 0, 2 * s, out=lab9[:, 1:])
    return img9, lab9, rects


def letterbox(im0, labels, s):
    img = load_image(im0, s)
    h, w = img.shape[:2]
    r = min(s / h, s / w)
    new_unpad = int(round(w * r)), int(round(h * r))
    dw, dh = (s - new_unpad[0]) / 2, (s - new_unpad[1]) / 2
    if (w, h) != new_unpad:
        img = cv2.resize(img, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right,
                             cv2.BORDER_CONSTANT, value=(114, 114, 114))
    lab = labels.copy()
    if len(lab):
        lab[:, 1:] = xywhn2xyxy(lab[:, 1:], r * w, r * h, dw, dh)
    return img, lab, [(left, top, left + new_unpad[0], top + new_unpad[1])]


def box_candidates(box1, box2, wh_thr=2, ar_thr=20, area_thr=0.1, eps=1e-16):
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return ((w2 > wh_thr) & (h2 > wh_thr) &
            (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr))


def random_perspective(img, targets, draws, border):
    """draws: (px, py, angle, scale, shear_x, shear_y, tx, ty) as the
    official random.uniform calls return them. Returns the image, the kept
    targets, the candidate mask and M."""
    px, py, a, s, shx, shy, tx, ty = draws
    height = img.shape[0] + border[0] * 2
    width = img.shape[1] + border[1] * 2
    C = np.eye(3)
    C[0, 2] = -img.shape[1] / 2
    C[1, 2] = -img.shape[0] / 2
    P = np.eye(3)
    P[2, 0], P[2, 1] = px, py
    R = np.eye(3)
    R[:2] = cv2.getRotationMatrix2D(angle=a, center=(0, 0), scale=s)
    S = np.eye(3)
    S[0, 1] = math.tan(shx * math.pi / 180)
    S[1, 0] = math.tan(shy * math.pi / 180)
    T = np.eye(3)
    T[0, 2] = tx * width
    T[1, 2] = ty * height
    M = T @ S @ R @ P @ C
    if border[0] or border[1] or (M != np.eye(3)).any():
        if px or py:
            img = cv2.warpPerspective(img, M, dsize=(width, height),
                                      borderValue=(114, 114, 114))
        else:
            img = cv2.warpAffine(img, M[:2], dsize=(width, height),
                                 borderValue=(114, 114, 114))
    n = len(targets)
    keep = np.zeros(0, bool)
    if n:
        xy = np.ones((n * 4, 3))
        xy[:, :2] = targets[:, [1, 2, 3, 4, 1, 4, 3, 2]].reshape(n * 4, 2)
        xy = xy @ M.T
        xy = (xy[:, :2] / xy[:, 2:3] if (px or py) else xy[:, :2]).reshape(
            n, 8)
        x = xy[:, [0, 2, 4, 6]]
        y = xy[:, [1, 3, 5, 7]]
        new = np.concatenate((x.min(1), y.min(1), x.max(1),
                              y.max(1))).reshape(4, n).T
        new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
        new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
        keep = box_candidates(targets[:, 1:5].T * s, new.T)
        targets = targets[keep]
        targets[:, 1:5] = new[keep]
    return img, targets, keep, M


def augment_hsv(img, r):
    """``augment_hsv`` with its gains ``r`` (1 + U(-1, 1) * hyp) given."""
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=np.int16)
    lut_hue = ((x * r[0]) % 180).astype(img.dtype)
    lut_sat = np.clip(x * r[1], 0, 255).astype(img.dtype)
    lut_val = np.clip(x * r[2], 0, 255).astype(img.dtype)
    img_hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat),
                         cv2.LUT(val, lut_val))).astype(img.dtype)
    return cv2.cvtColor(img_hsv, cv2.COLOR_HSV2BGR)
