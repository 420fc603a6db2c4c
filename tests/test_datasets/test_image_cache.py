"""cache_images: the cached image is the official load_image's, RAM is one
shared block that workers read without a copy, the need is logged first
and a cache that does not fit is refused, the disk cache is reused while
the listing's fingerprint holds and rebuilt when an image changes, and a
cached sample equals an uncached one."""
import multiprocessing as mp
import os
import pickle
import random

import cv2
import numpy as np
import pytest

from helpers.pipeline_data import ListDataset, make_images
from mmyolo_ext.datasets import image_cache as image_cache_module
from mmyolo_ext.datasets.image_cache import ImageCache
from mmyolo_ext.datasets.transforms import YOLOv7MosaicPerspective

S = 128
SIZES = [(200, 150), (128, 96), (90, 128), (300, 120), (128, 128)]


@pytest.fixture
def data(tmp_path):
    infos, images, _ = make_images(str(tmp_path / 'images'), SIZES, seed=2)
    return infos, images


def build(infos, mode):
    return ImageCache.build([i['img_path'] for i in infos],
                            [(i['width'], i['height']) for i in infos], mode,
                            S, num_threads=2)


def official_load_image(img, s):
    h0, w0 = img.shape[:2]
    r = s / max(h0, w0)
    if r != 1:
        img = cv2.resize(img, (int(w0 * r), int(h0 * r)),
                         interpolation=cv2.INTER_LINEAR)
    return img


@pytest.mark.parametrize('mode', ['ram', 'disk'])
def test_cached_image_is_the_official_load_image(data, mode):
    infos, images = data
    cache = build(infos, mode)
    for i, img in enumerate(images):
        np.testing.assert_array_equal(cache.get(i),
                                      official_load_image(img, S))
    cache.close()


def _read_in_child(cache, queue):
    queue.put([int(cache.get(i).astype(np.int64).sum())
               for i in range(len(cache))])


def test_ram_cache_is_one_shared_block(data):
    infos, images = data
    cache = build(infos, 'ram')
    for i in range(len(images)):
        assert np.shares_memory(cache.get(i), cache._block)  # no copy
    assert cache._block_path.startswith('/dev/shm/')
    # a forked worker reads the parent's memory
    ctx = mp.get_context('fork')
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(cache, queue))
    child.start()
    sums = queue.get(timeout=60)
    child.join(60)
    assert sums == [int(official_load_image(im, S).astype(np.int64).sum())
                    for im in images]
    # a spawned worker gets it pickled: it attaches to the same block
    # (what the parent writes, it sees), nothing is copied
    attached = pickle.loads(pickle.dumps(cache))
    assert len(pickle.dumps(cache)) < 10_000
    cache.get(0)[0, 0] = (1, 2, 3)
    assert tuple(attached.get(0)[0, 0]) == (1, 2, 3)
    attached.close()
    cache.close()


def test_need_logged_first_and_refused_when_it_does_not_fit(
        data, monkeypatch):
    infos, _ = data
    need = sum(w * h * 3 for w, h in
               (image_cache_module.resized_size(w, h, S) for w, h in SIZES))
    messages = []
    monkeypatch.setattr(image_cache_module, 'print_log',
                        lambda msg, **kwargs: messages.append(msg))
    cache = build(infos, 'ram')
    assert f'{len(SIZES)} images at {S} need {need / 1e9:.2f} GB' in \
        messages[0]
    assert 'images cached' in messages[-1]
    cache.close()
    monkeypatch.setattr(image_cache_module, 'available_memory',
                        lambda: need)  # 90 % of it may be used
    with pytest.raises(MemoryError, match=r"need .* GB but only .* "
                       r"available.*cache_images='disk'"):
        build(infos, 'ram')


def test_disk_cache_reused_until_an_image_changes(data):
    infos, _ = data
    cache = build(infos, 'disk')
    folder = os.path.dirname(cache.files[0])
    assert folder.endswith(f'images_npy{S}')
    stamps = [os.stat(f).st_mtime_ns for f in cache.files]
    again = build(infos, 'disk')  # same listing: the files are kept
    assert [os.stat(f).st_mtime_ns for f in again.files] == stamps
    # an image rewritten: the fingerprint changes, the cache is rebuilt
    new = np.full((150, 200, 3), 7, np.uint8)
    cv2.imwrite(infos[0]['img_path'], new)
    rebuilt = build(infos, 'disk')
    np.testing.assert_array_equal(rebuilt.get(0),
                                  official_load_image(new, S))


def test_undecodable_image_is_left_to_the_loader(data):
    infos, _ = data
    with open(infos[1]['img_path'], 'wb') as f:
        f.write(b'not an image')
    cache = build(infos, 'ram')
    assert cache.get(1) is None and cache.get(0) is not None
    cache.close()


@pytest.mark.parametrize('mode', ['ram', 'disk'])
def test_cached_samples_equal_uncached(tmp_path, mode):
    """Images whose long side is the input size: the cached image is the
    file's, so the same draws give the same sample."""
    infos, _, _ = make_images(str(tmp_path), [(S, 96), (100, S), (S, S),
                                              (S, 64)], seed=4)
    plain = ListDataset(infos)
    cached = ListDataset(infos, image_cache=build(infos, mode))
    t = YOLOv7MosaicPerspective(img_scale=(S, S), scale=0.5)
    for seed in range(6):
        out = []
        for ds in (plain, cached):
            random.seed(seed)
            out.append(t(dict(ds.get_data_info(seed % 4), dataset=ds)))
        np.testing.assert_array_equal(out[0]['img'], out[1]['img'])
        np.testing.assert_array_equal(out[0]['gt_bboxes'].numpy(),
                                      out[1]['gt_bboxes'].numpy())
