"""Security of the closed stack: parameterised queries, private generated credentials.

- every Cypher and CQL text in ``learntrack/`` is a constant, values travel as
  parameters (read from the source, no server needed);
- the credentials ``learntrack stack up`` generates stay private (mode 0600,
  git-ignored, untracked) and masked in ``learntrack config show``.
"""

from __future__ import annotations

import ast
import stat
import subprocess
import sys

import orjson
import pytest

from learntrack.stack.manager import Stack
from tests.helpers import ROOT

pytestmark = [pytest.mark.stack, pytest.mark.spark]


def test_store_queries_are_parameterized() -> None:
    """Every Cypher and CQL text is a constant; values travel as parameters.

    A query passed to ``run`` / ``execute`` / ``prepare`` that is built with an
    f-string, ``%``, ``+`` or ``.format`` from anything but a constant fails this
    test, unless the interpolated name is one of the schema names below: the
    settings validate the keyspace and the Cassandra role as plain identifiers,
    labels and tables are constants of the code.
    """
    schema_names = {"label", "self.keyspace", "table.name", "role"}

    def constant(node: ast.expr) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Name):
            return node.id.isupper()  # a module-level query text
        if isinstance(node, ast.BinOp):
            return constant(node.left) and constant(node.right)
        return False

    offenders = []
    checked = 0
    for path in sorted((ROOT / "learntrack").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("run", "execute", "prepare")
                and node.args
            ):
                continue
            query = node.args[0]
            checked += 1
            if isinstance(query, ast.JoinedStr):
                names = {
                    ast.unparse(v.value)
                    for v in query.values
                    if isinstance(v, ast.FormattedValue)
                }
                ok = names <= schema_names
            elif isinstance(query, ast.BinOp):
                ok = constant(query)
            elif isinstance(query, ast.Call):
                ok = not (
                    isinstance(query.func, ast.Attribute)
                    and query.func.attr == "format"
                )
            else:
                ok = True  # a constant, a name bound to one, or a prepared statement
            if not ok:
                offenders.append(f"{path.name}:{node.lineno} {ast.unparse(query)}")
    assert checked > 20
    assert not offenders, "queries built from values:\n" + "\n".join(offenders)


# -- the closed stack -----------------------------------------------------------------
def test_generated_credentials_stay_private_and_masked(stack: Stack) -> None:
    from dotenv import dotenv_values

    from learntrack.config import credentials_path
    from learntrack.stack.credentials import GENERATED, MONGO_KEYFILE

    data_dir = stack.settings.data_dir
    path = credentials_path(data_dir)
    secrets = {k: v for k, v in dotenv_values(path).items() if v}
    assert set(GENERATED) <= set(secrets)
    for file in (path, data_dir / MONGO_KEYFILE):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    # Never committed: the data dirs are git-ignored, and no such file is tracked.
    candidates = [".learntrack/credentials.env", ".learntrack-test/credentials.env"]
    if data_dir.is_relative_to(ROOT):
        candidates.append(str(path.relative_to(ROOT)))
    for candidate in candidates:
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", candidate], cwd=ROOT, check=False
        )
        assert ignored.returncode == 0, f"{candidate} is not git-ignored"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert not [t for t in tracked if t.endswith(("credentials.env", MONGO_KEYFILE))]

    shown = subprocess.run(
        [sys.executable, "-m", "learntrack.cli", "config", "show", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    for value in secrets.values():
        assert value not in shown.stdout
    dumped = orjson.loads(shown.stdout)
    assert dumped["mongo"]["password"] == dumped["api"]["write_key"] == "********"
