"""The public estimators' numpydoc docstrings: every Examples section runs (doctest), and the Parameters section
documents every ``__init__`` parameter, with the signature's default."""
import ast
import doctest
import inspect
import re

import pytest

from pymusicrbm import DBN, RBM, ConvDBN, ConvRBM, ConvVAE, DBNClassifier
from pymusicrbm.audio import PCAWhitener

ESTIMATORS = [RBM, DBN, DBNClassifier, ConvRBM, ConvDBN, ConvVAE, PCAWhitener]
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# numpydoc section header: a title line underlined with dashes
SECTION = re.compile(r"^(\w[\w ]*)\n-+\n", re.MULTILINE)
# a parameter entry: "name : type" or "name1, name2 : type" at the section's indent
ENTRY = re.compile(r"^(\w+(?:, \w+)*) :(.*)$", re.MULTILINE)


def sections(doc: str) -> dict:
    """Section title -> section body of a numpydoc docstring."""
    doc = inspect.cleandoc(doc)
    heads = list(SECTION.finditer(doc))
    return {m.group(1): doc[m.end():heads[i + 1].start() if i + 1 < len(heads) else len(doc)]
            for i, m in enumerate(heads)}


def documented_parameters(doc: str) -> dict:
    """Parameter name -> the default text of its entry (None when the entry gives none). Entries naming several
    parameters give their defaults joined by ' and ' (``n_mels, n_frames : int, default=64 and 128``)."""
    out = {}
    for m in ENTRY.finditer(sections(doc).get("Parameters", "")):
        names = m.group(1).split(", ")
        default = re.search(r"default=(.*)$", m.group(2))
        values = default.group(1).split(" and ") if default else [None] * len(names)
        if len(values) != len(names):
            values = [default.group(1)] * len(names)
        out.update(zip(names, values))
    return out


def init_parameters(cls) -> dict:
    """``__init__`` parameter name -> default (``**renamed``, the old names of renamed keywords, excluded)."""
    sig = inspect.signature(cls.__init__)
    return {name: p.default for name, p in sig.parameters.items()
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def parameter_problems(cls) -> list[str]:
    documented = documented_parameters(cls.__doc__ or "")
    problems = []
    for name, default in init_parameters(cls).items():
        if name not in documented:
            problems.append(f"{name}: not in the Parameters section")
        elif documented[name] is None:
            problems.append(f"{name}: its entry gives no default")
        else:
            try:
                value = ast.literal_eval(documented[name].strip())
            except (ValueError, SyntaxError):
                problems.append(f"{name}: documented default {documented[name]!r} is not a literal")
                continue
            if value != default:
                problems.append(f"{name}: documented default {value!r}, signature default {default!r}")
    problems += [f"{name}: documented but not an __init__ parameter"
                 for name in set(documented) - set(init_parameters(cls))]
    return problems


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_docstring_has_numpydoc_sections(cls):
    found = sections(cls.__doc__)
    assert {"Parameters", "Attributes", "Examples"} <= set(found), sorted(found)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_every_init_parameter_is_documented_with_its_default(cls):
    assert parameter_problems(cls) == []


def test_parameter_check_catches_missing_and_wrong_entries():
    class Documented:
        """A toy estimator.

        Parameters
        ----------
        a, b : int, default=1 and 2
            Two sizes.
        c : float, default=0.5
            A rate.
        gone : int, default=3
            No longer a parameter.

        Attributes
        ----------
        d_ : int
            Not a parameter.
        """

        def __init__(self, a=1, b=2, c=0.25, d=None, **renamed):
            pass

    assert sorted(parameter_problems(Documented)) == [
        "c: documented default 0.5, signature default 0.25",
        "d: not in the Parameters section",
        "gone: documented but not an __init__ parameter",
    ]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_examples_run(cls):
    tests = doctest.DocTestFinder(recurse=False).find(cls, cls.__name__, globs={})
    examples = [t for t in tests if t.examples]
    assert examples, f"{cls.__name__} has no Examples to run"
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report = []
    failed = sum(runner.run(test, out=report.append).failed for test in examples)
    assert failed == 0, "".join(report)
