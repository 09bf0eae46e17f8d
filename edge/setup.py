"""Builds the edge distribution from the repository's own sources.

The packages and the extension live one level up (../hecsb_jax, ../native),
so they are named through package_dir and relative source paths rather
than copied: one copy of the code, whichever distribution is installed.
pip (>= 21.3) builds a local folder in place, so "../" resolves against
the repository; from a clean clone `pip install ./edge` is all it takes.
"""

import os
import sys

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# Relative paths: setuptools refuses absolute ones in package_dir/sources.
ROOT = os.path.relpath(os.path.dirname(HERE), HERE)
if not os.path.isfile(os.path.join(HERE, ROOT, "native", "rc.h")):
  sys.exit(f"edge/setup.py: expected the repository's native/ and hecsb_jax/"
           f" beside {HERE}; build this from a checkout of the repository")
os.chdir(HERE)

_FLAGS = [] if sys.platform == "win32" else ["-std=c99", "-O3"]


def _src(*parts):
  return os.path.join(ROOT, *parts)


setup(
    packages=["hecsb_jax", "hecsb_jax.coding", "hecsb_jax.edge"],
    package_dir={
        "hecsb_jax": _src("hecsb_jax"),
        "hecsb_jax.coding": _src("hecsb_jax", "coding"),
        "hecsb_jax.edge": _src("hecsb_jax", "edge"),
    },
    ext_modules=[
        Extension(
            "hecsb_jax.coding._rc",
            sources=[_src("native", name) for name in (
                "rc_tables.c", "rc_coder.c", "rc_container.c", "py_rc.c")],
            depends=[_src("native", "rc.h"), _src("native", "rc_internal.h")],
            include_dirs=[_src("native")],
            extra_compile_args=_FLAGS,
        )
    ],
)
