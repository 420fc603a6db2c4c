"""The benchmarks the docs show, run as shown with their smallest settings:
each finishes and prints the table its docs quote (the figures themselves
are measurements, not test expectations)."""
import os
import re
import sys

from helpers.concurrent_runs import command, run_all
from helpers.paths import ROOT

ENV = dict(os.environ, OMP_NUM_THREADS='1')


def test_custom_recipe_and_yolo_dataset_benchmarks_run(tmp_path):
    custom, dataset = run_all(
        command([
            sys.executable, 'benchmarks/custom_recipe.py', '--runs', 'custom',
            '--epochs', '1', '--threads', '1', '--work-dir',
            str(tmp_path / 'work'), '--shifted-root',
            str(tmp_path / 'shifted'), '--shapes-root',
            str(tmp_path / 'shapes')
        ], cwd=ROOT, env=ENV),
        command([
            sys.executable, str(ROOT / 'benchmarks' / 'yolo_dataset.py'),
            '--num-images',
            '300', '--img-size', '16'
        ], cwd=tmp_path, env=ENV))
    assert custom.returncode == 0, custom.stdout[-2000:] + custom.stderr[-2000:]
    # one row for the run, with its mAP after the one evaluated epoch
    row = re.search(r'^\| custom \| 1 \| ([0-9.]+) \(1\) \|', custom.stdout,
                    re.M)
    assert row, custom.stdout[-2000:]
    assert 0 <= float(row.group(1)) <= 1
    assert dataset.returncode == 0, dataset.stderr[-2000:]
    assert 'wrote 300 images' in dataset.stdout
    assert 'second start (cache loaded)' in dataset.stdout
