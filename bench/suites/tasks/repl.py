"""A persistent Python REPL, emulated over fresh sandboxed processes.

Benchmarks such as MINT give the agent an interactive interpreter: variables
survive from one cell to the next and a cell's last expression is echoed.
Each run here is a fresh subprocess (the sandbox), so the earlier cells that
ran without error are replayed first, silently; tool functions offered to
the agent are defined by a ``setup`` snippet; and a traceback shows only the
agent's own cell, not this wrapper.
"""

from __future__ import annotations

import ast


def repl_program(history: list[str], cell: str, setup: str = "") -> str:
    """Replay ``history`` silently, then run ``cell``, echoing its last expression (a persistent REPL, emulated).

    ``setup`` runs first in the same namespace (tool functions offered to the cell).
    """
    echo_last = False
    try:
        tree = ast.parse(cell)
        echo_last = bool(tree.body) and isinstance(tree.body[-1], ast.Expr)
    except SyntaxError:
        pass
    run = (
        "_tree = _ast.parse(_cell)\n"
        "_last = _tree.body.pop()\n"
        "exec(compile(_tree, '<cell>', 'exec'), _g)\n"
        "_value = eval(compile(_ast.Expression(_last.value), '<cell>', 'eval'), _g)\n"
        "if _value is not None:\n"
        "    print(_value if isinstance(_value, str) else repr(_value))\n"
        if echo_last
        else "exec(compile(_cell, '<cell>', 'exec'), _g)\n"
    )
    return (
        "import contextlib as _c, io as _io, ast as _ast, sys as _sys, traceback as _tb\n"
        f"_history = {history!r}\n"
        f"_cell = {cell!r}\n"
        "_g = {'__name__': '__main__'}\n"
        f"exec(compile({setup!r}, '<tools>', 'exec'), _g)\n"
        "for _h in _history:\n"
        "    try:\n"
        "        with _c.redirect_stdout(_io.StringIO()), _c.redirect_stderr(_io.StringIO()):\n"
        "            exec(compile(_h, '<earlier cell>', 'exec'), _g)\n"
        "    except BaseException:\n"
        "        pass\n"
        "try:\n"
        + "".join("    " + line + "\n" for line in run.splitlines())
        + "except BaseException as _e:\n"
        "    _t = _e.__traceback__\n"
        "    while _t is not None and _t.tb_frame.f_code.co_filename != '<cell>':\n"
        "        _t = _t.tb_next\n"
        "    _tb.print_exception(type(_e), _e, _t)\n"
        "    _sys.exit(1)\n"
    )
