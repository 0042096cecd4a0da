"""Every `>>>` example in the package's docstrings runs on the embedded model, output checked.

The examples are what `help()` shows; they share one namespace with `li` (the package),
`torch` and `model` (the embedded `tiny` model), as a notebook would.
"""

import doctest
import importlib
import pkgutil

import pytest
import torch

import lens_inversion as li


def _modules() -> list[str]:
    names = ["lens_inversion"]
    for info in pkgutil.walk_packages(li.__path__, prefix="lens_inversion."):
        if ".models.assets" not in info.name and not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


def _examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for name in _modules():
        for test in finder.find(importlib.import_module(name)):
            if test.examples and test.name.startswith(name):
                tests.append(test)
    return tests


EXAMPLES = _examples()


def test_the_package_has_examples_and_none_is_skipped():
    assert len(EXAMPLES) >= 6
    skipped = [t.name for t in EXAMPLES for e in t.examples if e.options.get(doctest.SKIP)]
    assert skipped == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda t: t.name)
def test_docstring_example(example, tiny):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    example.globs.update(li=li, torch=torch, model=tiny)
    report: list[str] = []
    runner.run(example, out=report.append)
    assert runner.summarize(verbose=False).failed == 0, "".join(report)
