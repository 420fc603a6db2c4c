"""tools/analysis_tools/check_anchors.py on a config, as docs/own_data.md
shows it: the labels it counts are the training annotations' boxes, and it
reports the anchors' best possible recall (the BPR itself is re-derived in
tests/test_engine/test_autoanchor.py)."""
import json
import re
import sys

from helpers.tiny_demo import tiny_demo_config
from helpers.tools import load_tool


def test_tool_prints_the_anchors_and_their_bpr(tmp_path, monkeypatch,
                                               capsys):
    config = tiny_demo_config(tmp_path, images=6)
    tool = load_tool('tools/analysis_tools/check_anchors.py')
    monkeypatch.setattr(sys, 'argv', ['check_anchors.py', str(config)])
    assert tool.main([str(config)]) == 0
    out = capsys.readouterr().out
    annotations = json.loads(
        (tmp_path / 'shapes' / 'annotations' /
         'instances_train.json').read_text())['annotations']
    assert re.search(rf'^{len(annotations)} labels at', out, re.M), out
    bpr = float(re.search(r'^BPR\s+([0-9.]+)', out, re.M).group(1))
    assert 0 < bpr <= 1
    assert re.search(r'^anchors\s+\[\[\[', out, re.M), out
