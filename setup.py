"""Package discovery only; the metadata is in pyproject.toml.

Every package under bench/ is found, so a new subpackage cannot go missing from a wheel, and plugins/ is
installed as ``bench_plugins``: setuptools' declarative ``packages.find`` cannot rename a folder.
"""
from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["bench", "bench.*"]), "bench_plugins"],
      package_dir={"bench_plugins": "plugins"})
