"""Build hook for the native range coder extension (see native/)."""

from setuptools import setup

setup()
