"""Build hook for the native range coder extension (see native/).

`hecsb_jax.coding._rc` is the coder (native/rc_tables.c, rc_coder.c and
rc_container.c) plus native/py_rc.c (the CPython binding). It needs only a C99
compiler and Python's headers: no numpy C API (buffers come through the buffer
protocol) and no JAX.
"""

import sys

from setuptools import Extension, setup

# -O3: lets the compiler vectorize the per-call table check (rc_check_cdf).
_FLAGS = [] if sys.platform == "win32" else ["-std=c99", "-O3"]

setup(
    ext_modules=[
        Extension(
            "hecsb_jax.coding._rc",
            sources=[
                "native/rc_tables.c",
                "native/rc_coder.c",
                "native/rc_container.c",
                "native/py_rc.c",
            ],
            depends=["native/rc.h", "native/rc_internal.h"],
            include_dirs=["native"],
            extra_compile_args=_FLAGS,
        )
    ],
)
