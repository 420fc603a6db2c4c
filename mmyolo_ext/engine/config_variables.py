"""Config variables set from the command line, before the config is
evaluated.

MMEngine merges ``--cfg-options`` into the parsed config, so ``--cfg-options
img_scale=(320, 320)`` changes the top-level ``img_scale`` but none of the
pipelines, dataloaders or schedules already built from it (and a base file's
variables are out of reach altogether). :func:`load_config` instead
substitutes such a variable where it is defined: every file of the
inheritance chain that assigns it at top level (``name = ...``) gets the
given value in place of its own, and then the files are evaluated as usual,
so everything derived from it is recomputed. Options with dotted keys, and
names no file assigns, are merged afterwards as MMEngine does.
"""
import ast
import contextlib
from typing import Dict, Iterator, Optional

from mmengine.config import Config


def _literal(name: str, value) -> ast.expr:
    """AST of ``value`` (literals, tuples, lists, dicts of them)."""
    if isinstance(value, dict):  # mmengine's ConfigDict
        value = dict(value)
    try:
        node = ast.parse(repr(value), mode='eval').body
        ast.literal_eval(node)
    except (SyntaxError, ValueError):
        raise ValueError(f'--cfg-options {name}={value!r}: only literal '
                         'values (numbers, strings, tuples, lists, dicts) '
                         'can set a config variable') from None
    return node


def _override_assignments(path: str, values: Dict[str, object]) -> None:
    """Rewrite the top-level ``name = ...`` of ``values`` in file ``path``."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
    changed = False
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in values):
            node.value = _literal(node.targets[0].id,
                                  values[node.targets[0].id])
            changed = True
    if changed:
        with open(path, 'w', encoding='utf-8') as f:
            f.write(ast.unparse(ast.fix_missing_locations(tree)))


@contextlib.contextmanager
def _variables_substituted(values: Dict[str, object]) -> Iterator[None]:
    # mmengine 0.10 copies every file of the chain to a temporary file
    # (substituting {{fileDirname}}-style names) before evaluating it: the
    # assignments are rewritten in that copy
    original = Config._substitute_predefined_vars

    def substitute(filename: str, temp_config_name: str):
        result = original(filename, temp_config_name)
        if temp_config_name.endswith('.py'):
            _override_assignments(temp_config_name, values)
        return result

    Config._substitute_predefined_vars = staticmethod(substitute)
    try:
        yield
    finally:
        Config._substitute_predefined_vars = staticmethod(original)


def load_config(filename: str,
                cfg_options: Optional[Dict[str, object]] = None) -> Config:
    """``Config.fromfile(filename)`` with ``cfg_options`` applied: plain
    names substituted where the files define them (see the module
    docstring), then every option merged as ``--cfg-options`` is."""
    options = dict(cfg_options or {})
    variables = {k: v for k, v in options.items() if '.' not in k}
    if variables:
        with _variables_substituted(variables):
            cfg = Config.fromfile(filename, use_predefined_variables=True)
    else:
        cfg = Config.fromfile(filename)
    if options:
        cfg.merge_from_dict(options)
    return cfg
