"""Built-in configs, shipped in the wheel and addressable by name (``--config synthetic``)."""
