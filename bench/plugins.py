"""The plugin host's functions under their documented path (``docs/plugins.md``); they live in
:mod:`bench.host.manager`. Importing this module loads no plugin: the host is built on first use."""
from .host.manager import Host, build_host, get_entry, get_host, get_registry, set_host

__all__ = ["Host", "build_host", "get_entry", "get_host", "get_registry", "set_host"]
