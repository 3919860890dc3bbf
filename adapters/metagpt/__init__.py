"""MetaGPT (0.8) through the AIOS kernel: ``aios.patch("metagpt")``.

Every model provider's calls (``aask`` -> ``acompletion_text``, ``acompletion``,
``aask_code``, streaming) become LLM syscalls of the Role that makes them; a
Team or Environment run is the program those syscalls belong to.
"""

from aios.adapters.metagpt.adapter import MetaGPTAdapter

__all__ = ["MetaGPTAdapter"]
