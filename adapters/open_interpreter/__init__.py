"""Open-Interpreter (0.4) through the AIOS kernel: ``aios.patch("open-interpreter")``.

``interpreter.chat(...)`` streams its model turns from the kernel, and the code
the model writes runs as tool syscalls in the kernel's sandbox, after the access
manager confirmed it (running code is irreversible).
"""

from aios.adapters.open_interpreter.adapter import OpenInterpreterAdapter

__all__ = ["OpenInterpreterAdapter"]
