"""Open-Interpreter's Python quickstart, scheduled by AIOS.

Run from this directory (AIOS reads ./aios.toml): python quickstart.py
The only AIOS line is `aios.patch("open-interpreter", ...)`: the interpreter's model turns
are answered by the embedded Gemma 3 270M model through the kernel, and the code it writes
runs in the kernel's sandbox after access control (see aios.toml). Nothing leaves the machine.
"""

import aios

aios.patch("open-interpreter", max_tokens=128)  # before importing interpreter: its import then stays offline

from interpreter import interpreter

interpreter.auto_run = True
interpreter.chat("What is 2 to the power of 10? Use Python to compute it.")  # Executes a single command
