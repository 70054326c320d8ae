"""The error tree of :mod:`fedlab_kit.errors`: the package errors hang where they belong, and
user-facing code raises fedlab errors, never a bare ``ValueError`` / ``TypeError``."""

from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import pytest

import fedlab_kit
from fedlab_kit.boost.errors import BoostError
from fedlab_kit.dp.errors import BudgetExceeded, DPError
from fedlab_kit.errors import (
    FedlabError,
    InputError,
    InputTypeError,
    InternalError,
    PeerAborted,
    PeerError,
    PeerLost,
    PeerRestarted,
    ProtocolError,
    SetupError,
)
from fedlab_kit.maps.errors import MapExportError, NotReleasedError
from fedlab_kit.psi.curve import InvalidPoint, mul_points
from fedlab_kit.psi.ids import IdError

PACKAGE = Path(fedlab_kit.__file__).parent


# ---------------------------------------------------------------------------- hierarchy
@pytest.mark.parametrize("cls", [DPError, BudgetExceeded, BoostError, IdError, NotReleasedError])
def test_package_input_errors_are_input_errors_and_value_errors(cls: type) -> None:
    assert issubclass(cls, InputError) and issubclass(cls, ValueError)
    assert issubclass(cls, FedlabError)


def test_the_rest_of_the_tree() -> None:
    assert issubclass(BudgetExceeded, DPError)
    assert issubclass(InputTypeError, InputError) and issubclass(InputTypeError, TypeError)
    assert issubclass(MapExportError, SetupError) and not issubclass(MapExportError, InputError)
    assert issubclass(PeerAborted, PeerError) and issubclass(PeerRestarted, PeerError)
    assert issubclass(PeerRestarted, PeerLost)
    assert issubclass(InternalError, RuntimeError) and issubclass(InternalError, FedlabError)
    # a low-order point can only come from a peer
    assert issubclass(InvalidPoint, ProtocolError) and not issubclass(InvalidPoint, InputError)


def test_invalid_point_survives_a_worker_process() -> None:
    """mul_points runs in worker processes: the error comes back pickled."""
    err = pickle.loads(pickle.dumps(InvalidPoint(4)))
    assert isinstance(err, InvalidPoint) and err.index == 4
    assert str(err) == str(InvalidPoint(4))


def test_some_former_builtin_sites() -> None:
    from fedlab_kit import maps
    from fedlab_kit.data import load_sample, make_city

    with pytest.raises(InputError, match="center"):
        maps.base_map(center=(1.0, 2.0, 3.0))
    with pytest.raises(InputError, match="unknown party"):
        load_sample("bank")
    with pytest.raises(InputTypeError, match="persons must be an integer"):
        make_city(persons=1000.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="whole number of points"):
        mul_points(os.urandom(32), b"\x01" * 33)


# -------------------------------------------------------------- how panels show errors
def test_panels_show_fedlab_errors_without_a_class_prefix() -> None:
    from fedlab_kit.widgets._background import describe_error

    assert describe_error(InputError("n must be > 0")) == "n must be > 0"
    assert describe_error(InputTypeError("need a DataFrame")) == "need a DataFrame"
    assert describe_error(DPError("epsilon must be > 0")) == "epsilon must be > 0"
    aborted = PeerAborted("PSI", "bob", "2 duplicate IDs")
    assert describe_error(aborted) == str(aborted) == "'bob' stopped PSI: 2 duplicate IDs"
    for err in (PeerLost("PSI", "bob"), PeerRestarted("PSI", "bob")):
        assert describe_error(err) == str(err)
        assert str(err).startswith("'bob' ") and "Peer" not in str(err)
    assert describe_error(ValueError("boom")) == "ValueError: boom"  # a bug: say what it is


# ------------------------------------------------- no bare ValueError / TypeError raised
#: where user-facing code must raise fedlab errors (paths relative to fedlab_kit/)
SCOPE = ("maps", "widgets", "dp", "data", "analytics", "he", "boost", "demo",
         "psi/ids.py", "psi/buckets.py", "psi/curve.py", "tables.py", "cli.py")
BUILTINS = frozenset({"ValueError", "TypeError"})
#: (file, enclosing function) -> why that site must raise the builtin; keep this short
ALLOWED = {
    # json.dumps calls its ``default`` hook and expects a TypeError for what it cannot
    # encode; _meta_json turns that into a DPError right away
    ("dp/ledger.py", "_meta_json.plain"): "TypeError",
    # pickle's convention for an object that refuses to be pickled (the secret key must
    # never leave the label holder's process); tests/test_boost_bfv.py relies on it
    ("boost/bfv.py", "BfvActive.__getstate__"): "TypeError",
}


def _scoped_files() -> list[Path]:
    files = []
    for entry in SCOPE:
        path = PACKAGE / entry
        assert path.exists(), f"fedlab_kit/{entry} is gone: update SCOPE"
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def _raised_builtin(node: ast.Raise) -> str | None:
    exc = node.exc
    if isinstance(exc, ast.Call):
        exc = exc.func
    if isinstance(exc, ast.Name) and exc.id in BUILTINS:
        return exc.id
    if (isinstance(exc, ast.Attribute) and exc.attr in BUILTINS
            and isinstance(exc.value, ast.Name) and exc.value.id == "builtins"):
        return exc.attr
    return None


class _Raises(ast.NodeVisitor):
    """Every ``raise ValueError(...)`` / ``raise TypeError`` with its enclosing qualname."""

    def __init__(self) -> None:
        self.scope: list[str] = []
        self.found: list[tuple[str, int, str]] = []  # (qualname, line, builtin)

    def _nested(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _nested

    def visit_Raise(self, node: ast.Raise) -> None:
        name = _raised_builtin(node)
        if name is not None:
            self.found.append((".".join(self.scope), node.lineno, name))
        self.generic_visit(node)


def _builtin_raises() -> dict[tuple[str, str], list[tuple[int, str]]]:
    sites: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for path in _scoped_files():
        visitor = _Raises()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        rel = path.relative_to(PACKAGE).as_posix()
        for qualname, line, name in visitor.found:
            sites.setdefault((rel, qualname), []).append((line, name))
    return sites


def test_user_facing_code_raises_no_bare_value_or_type_error() -> None:
    sites = _builtin_raises()
    bad = [f"fedlab_kit/{rel}:{line} ({qualname or 'module'}) raises {name}"
           for (rel, qualname), found in sites.items() for line, name in found
           if ALLOWED.get((rel, qualname)) != name]
    assert not bad, ("raise InputError / InputTypeError (or the package's own subclass: "
                     "DPError, BoostError, NotReleasedError, IdError...) instead:\n"
                     + "\n".join(bad))


def test_the_allow_list_has_no_stale_entries() -> None:
    sites = _builtin_raises()
    stale = [key for key, name in ALLOWED.items()
             if name not in {n for _, n in sites.get(key, [])}]
    assert not stale, f"these allowed sites no longer raise a builtin: {stale}"


def test_errors_with_their_own_arguments_survive_pickling() -> None:
    """Errors cross process pools (a worker's error reaches the driver pickled)."""
    import pickle

    from fedlab_kit.dp.errors import BudgetExceeded
    from fedlab_kit.errors import PeerAborted, PeerLost, PeerRestarted, SecurityError

    for exc in (PeerAborted("PSI", "media", "1 duplicate IDs"), PeerLost("PSI", "media"),
                PeerRestarted("PSI", "media"), SecurityError("media", "replayed frame"),
                BudgetExceeded("q", "media", (1.0, 0.0), (0.5, 0.0), (2.0, 0.0))):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
        assert getattr(back, "peer", None) == getattr(exc, "peer", None)
