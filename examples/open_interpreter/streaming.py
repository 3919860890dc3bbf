"""Open-Interpreter's streaming Python API (``chat(..., stream=True)``), scheduled by AIOS.

Run from this directory: python streaming.py
Each chunk is an LMC message delta, as OI's docs describe: the model's text as the kernel
streams it, the code it writes, and the console output of that code from the kernel's sandbox.
"""

import aios

aios.patch("open-interpreter", max_tokens=128)  # before importing interpreter: its import then stays offline

from interpreter import interpreter

interpreter.auto_run = True
for chunk in interpreter.chat("Print the current working directory with Python.", display=False, stream=True):
    print(chunk)
