"""The commands the README and docs/ show: each script exists, accepts every
flag it is shown with (its own ``--help`` lists it), and is run by a test
(some test names its path), so a doc cannot drift from the tools."""
import re
import runpy
import shlex
import sys
from typing import Dict, List, Set

import pytest

from helpers.paths import ROOT

DOCS = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
# scripts a doc may show that CI runs itself rather than a test
RUN_BY_CI = {'tools/setup_env.sh'}


def shown_lines(text: str) -> List[str]:
    """The command lines of the ```bash blocks and of the inline code spans
    that start with ``python``, ``.venv/bin/python`` or ``bash``."""
    lines = []
    for block in re.findall(r'```(?:bash|shell|sh)\n(.*?)```', text, re.S):
        lines += block.replace('\\\n', ' ').split('\n')
    text = re.sub(r'```.*?```', '', text, flags=re.S)
    lines += re.findall(r'`((?:\.venv/bin/)?python [^`]+|bash [^`]+)`', text)
    return lines


def doc_commands() -> List[tuple]:
    """(doc name, script, flags) of each command line a doc shows."""
    found = []
    for doc in DOCS:
        for line in shown_lines(doc.read_text()):
            line = line.split(' # ')[0].strip()
            if not line or line.startswith('#'):
                continue
            # optional arguments are shown in brackets: [--num-images N]
            words = shlex.split(line.replace('[', ' ').replace(']', ' '),
                                comments=True)
            scripts = [w for w in words if re.fullmatch(
                r'(tools|benchmarks)/[\w/]+\.(py|sh)', w)]
            if not scripts:
                continue
            flags = {w.split('=')[0] for w in words if w.startswith('--')}
            found.append((doc.name, scripts[0], flags))
    return found


COMMANDS = doc_commands()


def test_the_docs_show_commands():
    scripts = {script for _, script, _ in COMMANDS}
    # the set-up, the main job and the tools of each page are there
    assert {'tools/setup_env.sh', 'tools/train.py', 'tools/test.py',
            'tools/deployment/export_onnx.py'} <= scripts


def _help_text(script: str, capsys, monkeypatch) -> str:
    monkeypatch.setattr(sys, 'argv', [script, '--help'])
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    with pytest.raises(SystemExit):
        runpy.run_path(str(ROOT / script), run_name='__main__')
    return capsys.readouterr().out


def test_each_doc_command_uses_an_existing_script_and_its_flags(
        capsys, monkeypatch):
    flags_by_script: Dict[str, Set[str]] = {}
    for doc, script, flags in COMMANDS:
        assert (ROOT / script).is_file(), f'{doc}: {script} does not exist'
        flags_by_script.setdefault(script, set()).update(flags)
    for script, flags in sorted(flags_by_script.items()):
        if not script.endswith('.py') or not flags:
            continue
        help_text = _help_text(script, capsys, monkeypatch)
        unknown = {f for f in flags if f not in help_text}
        assert not unknown, f'{script} --help does not list {sorted(unknown)}'


def test_each_doc_script_is_run_by_a_test():
    test_sources = [
        p.read_text() for p in (ROOT / 'tests').rglob('*.py')
        if p.name != 'test_doc_commands.py'
    ]
    for doc, script, _ in COMMANDS:
        if script in RUN_BY_CI:
            assert script in (ROOT / '.ci' / 'run').read_text()
            continue
        parts = script.split('/')
        # a test names the path as a string, as ROOT / 'a' / 'b' parts, or
        # its folder and its file name apart (a runner of that folder)
        as_parts = ' / '.join(repr(p) for p in parts)
        apart = any(parts[-2] in source and repr(parts[-1]) in source
                    for source in test_sources)
        assert (any(script in source or as_parts in source
                    for source in test_sources) or apart), (
            f'{doc} shows {script}, which no test runs')
