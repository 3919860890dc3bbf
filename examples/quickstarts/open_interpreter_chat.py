"""Open-Interpreter's Python quickstart shape (open-interpreter 0.4): ``interpreter.chat`` with code execution.

Follows Open-Interpreter 0.4's "Python usage": ``from interpreter import interpreter``,
``interpreter.auto_run = True`` (run the code it writes without asking at the
terminal) and ``interpreter.chat("...")``. The one added line is
``aios.patch("open-interpreter")`` (before the import: Open-Interpreter's import
then stays offline): no API key is needed, the model turns are answered by the
AIOS kernel and the code runs as a tool syscall in the kernel's sandbox once the
access manager allows it. Running code is irreversible and a script has nobody
to ask, so allow it in ``./aios.toml``::

    [managers.access.groups.default]
    preapproved = ["tool:python"]

Without that the run is denied, the model is told so, and the audit log
(``aios audit``) shows the refusal.

Run: python examples/quickstarts/open_interpreter_chat.py
"""

import aios

aios.patch("open-interpreter")

from interpreter import interpreter  # noqa: E402

interpreter.auto_run = True
interpreter.chat("How many seconds are there in a week? Compute it with Python.")
