"""Framework adapters: one package per framework, each a plugin registered through aios_register_adapters."""
