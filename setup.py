# Shim for tools that want a setup.py (pybuild, older pip): the metadata is in setup.cfg.
from setuptools import setup

setup()
