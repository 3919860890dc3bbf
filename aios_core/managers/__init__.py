"""The kernel's managers: context (snapshots), memory, storage, tools and access."""
