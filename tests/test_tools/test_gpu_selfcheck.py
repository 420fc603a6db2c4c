"""tools/misc/gpu_selfcheck.py on a machine without CUDA: it does not crash,
reports every check as skipped with the reason and exits 0; its dry run
executes the CPU-runnable checks (loss on the official vectors, predict and
deploy) and they pass."""
import os
import subprocess
import sys

import pytest
import torch

from helpers.paths import ROOT
from helpers.tools import load_tool
SCRIPT = ROOT / 'tools' / 'misc' / 'gpu_selfcheck.py'
CHECKS = ('loss vectors', 'assign 2000 GT', 'demo --amp', 'predict/deploy',
          'hsv on device', 'nccl 2 procs', 'benchmark_loss')


def run(*args):
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True,
                          timeout=600)


def table(stdout):
    rows = {}
    for line in stdout.splitlines():
        for name in CHECKS:
            if line.startswith(name + '  '):
                rows[name] = line[len(name):].split()
    return rows


@pytest.fixture(autouse=True)
def no_cuda():
    if torch.cuda.is_available():
        pytest.skip('covers the machine without CUDA; on a GPU run the '
                    'script itself')


def test_without_cuda_every_check_is_skipped_and_exit_code_is_0(
        monkeypatch, capsys):
    # the script's main() in this process (the dry run below runs the
    # command line): no CUDA here, as in a process with no visible device
    script = load_tool('tools/misc/gpu_selfcheck.py')
    monkeypatch.setattr(sys, 'argv', [str(SCRIPT)])
    assert script.main() == 0
    stdout = capsys.readouterr().out
    assert 'no CUDA device: every check skipped' in stdout
    rows = table(stdout)
    assert sorted(rows) == sorted(CHECKS)
    assert all(row[0] == 'SKIP' and 'no CUDA device' in ' '.join(row)
               for row in rows.values())


def test_dry_run_passes_the_cpu_runnable_checks():
    out = run('--cpu-dry-run', '--checks', 'loss vectors', 'predict/deploy',
              'hsv on device', 'nccl 2 procs')
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    rows = table(out.stdout)
    assert rows['loss vectors'][0] == 'PASS'
    assert 'matches equal' in ' '.join(rows['loss vectors'])
    assert rows['predict/deploy'][0] == 'PASS'
    assert rows['hsv on device'][0] == 'PASS'
    assert 'vs OpenCV' in ' '.join(rows['hsv on device'])
    assert rows['nccl 2 procs'][0] == 'SKIP'
