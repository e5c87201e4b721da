"""bench's built-in plugins (importable as ``bench_plugins``): registered through the same hooks as any plugin."""
