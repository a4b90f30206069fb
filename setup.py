"""Shim so that `pip install -e .` works with setup.cfg alone."""
import setuptools

setuptools.setup()
