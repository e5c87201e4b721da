"""The plugin host: the hook contract (``hookspecs``), the plugin manager that loads built-ins, entry points
and folders (``manager``), and the name -> entry tables (``registry``). Imports only the base modules.
"""
