"""benchmarks/pipeline.py as the docs show it, at its smallest settings:
it writes the COCO-like set (JPEGs, YOLO labels, COCO json with polygons)
and prints the per-sample table, the paste_in costs and the profile (the
figures are measurements, not expectations; the official contender needs
a checkout and is left out)."""
import json
import os
import subprocess
import sys

from helpers.paths import ROOT

ENV = dict(os.environ, OMP_NUM_THREADS='1')


def test_pipeline_benchmark_runs(tmp_path):
    data = tmp_path / 'coco_like'
    made = subprocess.run([
        sys.executable, 'benchmarks/pipeline.py', '--make-data',
        str(data), '--count', '12'
    ], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    assert len(list((data / 'images' / 'train').glob('*.jpg'))) == 12
    coco = json.loads((data / 'annotations' /
                       'instances_train.json').read_text())
    assert len(coco['images']) == 12 and all(
        a['segmentation'] for a in coco['annotations'])
    out = subprocess.run([
        sys.executable, 'benchmarks/pipeline.py', '--data',
        str(data), '--mmyolo', '--rounds', '1', '--samples', '2',
        '--paste-in', '--profile'
    ], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    for row in ('| ours |', '| ours ram |', '| ours +hsv |',
                '| ours ram +hsv |', '| mmyolo |', 'ours +hsv / mmyolo',
                'HSV in the data preprocessor (cpu', 'paste_in 1.0:',
                'profile of ours'):
        assert row in out.stdout, out.stdout[-3000:]
