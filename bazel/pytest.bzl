"""pytest_test: a py_test that runs its test files under pytest.

The tests in tests/ are pytest modules (fixtures, parametrize, no __main__),
so a plain py_test running the file as a script would pass without testing
anything. pytest_test runs //bazel:pytest_main.py on the files in srcs
instead; like any py_test it uses the python3 on PATH (an activated venv's,
which must have pytest and the project's dependencies installed).
"""

load("@rules_python//python:defs.bzl", "py_test")

def pytest_test(name, srcs, deps = [], data = [], args = [], **kwargs):
    py_test(
        name = name,
        srcs = srcs + ["//bazel:pytest_main.py"],
        main = "//bazel:pytest_main.py",
        args = args + ["$(rootpath {})".format(src) for src in srcs],
        deps = deps,
        data = data,
        python_version = "PY3",
        srcs_version = "PY3",
        # As plain pytest sees the tree: no __init__.py made up in tests/.
        legacy_create_init = False,
        **kwargs
    )
