"""User functions: imported by reference, shipped to slaves by value (cloudpickle)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from rqcluster.errors import InputError, RQClusterError
from rqcluster.functions import (
    _with_versions,
    describe,
    import_function,
    pack_function,
    unpack_function,
)

REPO = Path(__file__).resolve().parents[2]


class UserModules:
    """Writes modules into a directory of the test's own, as a user's project would have them,
    and forgets them afterwards (sys.modules and sys.path)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.names: list[str] = []

    def write(self, stem: str, source: str) -> str:
        name = f"{stem}_{uuid.uuid4().hex[:8]}"
        (self.directory / f"{name}.py").write_text(textwrap.dedent(source))
        self.names.append(name)
        return name

    def forget(self) -> None:
        for name in self.names:
            sys.modules.pop(name, None)
        while str(self.directory) in sys.path:
            sys.path.remove(str(self.directory))


@pytest.fixture
def user_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[UserModules]:
    directory = tmp_path / "userproject"
    directory.mkdir()
    monkeypatch.setattr(sys, "path", [str(directory), *sys.path])
    modules = UserModules(directory)
    try:
        yield modules
    finally:
        modules.forget()


def run_blob_elsewhere(blob: bytes, tmp_path: Path, arg: str, module_names: list[str]) -> str:
    """Unpack ``blob`` in a fresh interpreter whose cwd and path know none of the user's
    modules, call it with ``arg`` (a Python literal) and return what it printed."""
    elsewhere = tmp_path / "slave"
    elsewhere.mkdir()
    blob_path = elsewhere / "fn.bin"
    blob_path.write_bytes(blob)
    script = textwrap.dedent(f"""
        import importlib.util, sys
        for name in {module_names!r}:
            assert importlib.util.find_spec(name) is None, f"{{name}} is importable here"
        from rqcluster.functions import unpack_function
        fn = unpack_function(open(sys.argv[1], "rb").read())
        print(repr(fn({arg})))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script, str(blob_path)], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# --- import_function ------------------------------------------------------------------------

def test_a_module_function_reference_is_imported() -> None:
    assert import_function("json:dumps") is json.dumps


def test_a_dotted_attribute_reference_is_followed() -> None:
    assert import_function("os:path.join") is os.path.join


def test_a_module_in_the_current_directory_is_importable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"cwdmod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        assert import_function(f"{name}:double")(21) == 42
    finally:
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("ref", "fragments"),
    [
        ("json", ["expected MODULE:FUNCTION", "'json'"]),
        ("json.dumps", ["expected MODULE:FUNCTION"]),
        (":dumps", ["expected MODULE:FUNCTION"]),
        ("json:", ["expected MODULE:FUNCTION"]),
        ("", ["expected MODULE:FUNCTION"]),
        ("no_such_module_for_rqcluster:f", ["cannot import module",
                                            "'no_such_module_for_rqcluster'",
                                            "ModuleNotFoundError"]),
        ("json:no_such_function", ["module 'json' has no attribute 'no_such_function'"]),
        ("os:path.no_such", ["has no attribute 'path.no_such'"]),
        ("json:__name__", ["json:__name__ is a str, not a function"]),
    ],
)
def test_a_bad_reference_is_an_input_error_that_says_what_is_wrong(
        ref: str, fragments: list[str]) -> None:
    with pytest.raises(InputError) as info:
        import_function(ref, "map function")
    message = str(info.value)
    assert message.startswith("map function: ")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_a_module_that_fails_on_import_is_an_input_error_naming_the_failure(
        user_modules: UserModules) -> None:
    name = user_modules.write("broken", "raise RuntimeError('needs a GPU')\n")
    with pytest.raises(InputError, match=f"cannot import module '{name}'.*RuntimeError.*GPU"):
        import_function(f"{name}:f")


def test_a_module_with_a_syntax_error_is_an_input_error(user_modules: UserModules) -> None:
    name = user_modules.write("syntax", "def f(:\n    pass\n")
    with pytest.raises(InputError, match="SyntaxError"):
        import_function(f"{name}:f")


# --- pack / unpack ----------------------------------------------------------------------

def test_a_function_from_the_users_own_module_is_shipped_by_value(
        user_modules: UserModules, tmp_path: Path) -> None:
    name = user_modules.write("userfuncs", """
        import math

        OFFSET = 1000


        def _helper(x):
            return x * 3


        def compute(x):
            return _helper(x) + OFFSET + int(math.sqrt(16))
    """)
    fn = import_function(f"{name}:compute")
    assert fn(5) == 1019

    blob = pack_function(fn)
    user_modules.forget()
    assert name not in sys.modules

    assert run_blob_elsewhere(blob, tmp_path, "5", [name]) == "1019"


def test_a_helper_from_another_of_the_users_modules_is_shipped_too(
        user_modules: UserModules, tmp_path: Path) -> None:
    helpers = user_modules.write("helpers", """
        def triple(x):
            return 3 * x
    """)
    main = user_modules.write("userjob", f"""
        from {helpers} import triple


        def compute(x):
            return triple(x) + 1
    """)
    fn = import_function(f"{main}:compute")
    blob = pack_function(fn)
    user_modules.forget()

    assert run_blob_elsewhere(blob, tmp_path, "7", [main, helpers]) == "22"


def test_an_installed_function_travels_by_reference() -> None:
    assert unpack_function(pack_function(json.dumps)) is json.dumps


def test_a_lambda_and_a_closure_round_trip() -> None:
    offset = 17

    def add_offset(x: int) -> int:
        return x + offset

    assert unpack_function(pack_function(lambda x: x * 2))(21) == 42
    assert unpack_function(pack_function(add_offset))(3) == 20


def test_a_function_closing_over_a_lock_is_refused_naming_the_lock() -> None:
    lock = threading.Lock()

    def guarded(x: int) -> int:
        with lock:
            return x

    with pytest.raises(InputError) as info:
        pack_function(guarded, "map function")
    message = str(info.value)
    assert message.startswith("map function: cannot ship ")
    assert "guarded" in message and "lock" in message
    assert "\n" not in message
    assert isinstance(info.value, RQClusterError)


@pytest.mark.parametrize("value", [42, "json:dumps", None])
def test_packing_something_not_callable_is_refused(value: object) -> None:
    with pytest.raises(InputError, match="expected a function"):
        pack_function(value)  # type: ignore[arg-type]


def test_unpacking_something_not_callable_is_refused() -> None:
    with pytest.raises(InputError, match="not callable"):
        unpack_function(_with_versions(cloudpickle.dumps({"not": "a function"})))


def test_describe_names_module_and_qualified_name() -> None:
    assert describe(json.dumps) == "json:dumps"
    assert describe(UserModules.write) == f"{__name__}:UserModules.write"
