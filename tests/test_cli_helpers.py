"""The shared command-line runners of tests/helpers.py, and a check that every test module
runs cmx's command line through them (issue 23: "internal error" is only for bugs in cmx, so
any CLI call in a test that ends in one fails, unless the test provokes it on purpose).
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from cmx_cli import __version__
from cmx_cli.cli import cli
from cmx_cli.errors import CmxError
from tests.helpers import (INTERNAL_ERROR, check_internal_error, cmx_environment, run_cli,
                           run_cmx)

TESTS = Path(__file__).resolve().parent
#: The one module allowed to run cmx's command line by its own means.
RUNNERS = TESTS / "helpers.py"
Failed = pytest.fail.Exception


# --- the check: which code runs cmx's command line ------------------------------------------

#: Modules whose names, imported into a test module, can run the command line.
CLI_MODULES = re.compile(r"^cmx_cli(\.cli(\..*)?|\.__main__)$")
#: Methods that run a click command (``Command.main``, ``invoke``, ``callback``...).
RUNNING_METHODS = {"main", "invoke", "callback", "__call__", "forward"}
#: Functions that start a process from their first argument.
PROCESS_STARTERS = re.compile(r"^(subprocess\.(run|Popen|call|check_call|check_output|getoutput|"
                              r"getstatusoutput)|os\.(system|popen|exec\w*|spawn\w*)|"
                              r"pty\.spawn|asyncio\.create_subprocess_\w+)$")
#: A shell command or script that runs cmx: ``cmx ...``, ``-m cmx_cli``, cmx's entry point.
SHELL_RUN = re.compile(r"(^|[\s;&|/(\"'])cmx(\s|$)|-m\s*cmx_cli\b|\bcmx_cli\.(cli|__main__)\b")


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a chain of attributes on a name; '' for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return ""


def _root(node: ast.AST) -> str:
    """The name at the root of ``a.b[c].d``; '' if none."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else ""


class _Strings:
    """The text of a string expression: a literal, an f-string's literal parts, or a name
    that the module binds to a literal somewhere (so ``MODULE = "cmx_cli"`` is no disguise)."""

    def __init__(self, tree: ast.Module):
        self.bound: dict[str, list[str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and node.value is not None:
                        self.bound.setdefault(target.id, []).extend(self.of(node.value, {}))

    def of(self, node: ast.AST, bound=None) -> list[str]:
        bound = self.bound if bound is None else bound
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.JoinedStr):
            return ["".join(part.value if isinstance(part, ast.Constant) else " "
                            for part in node.values)]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return [left + right for left in self.of(node.left, bound)
                    for right in self.of(node.right, bound)]
        if isinstance(node, ast.Name):
            return bound.get(node.id, [])
        return []


def cli_runs(source: str) -> list[str]:
    """Where ``source`` runs cmx's command line other than through tests/helpers.py: click's
    ``CliRunner``, cmx's click group or entry point called or invoked, ``python -m cmx_cli``,
    or the ``cmx`` executable. Each finding is ``"line N: what"``.

    Reading cmx's click objects without running them (``cli.commands[name].params``,
    ``make_context``) is allowed, and so are paths such as ``ROOT / "cmx_cli" / "demo_data"``.
    """
    tree = ast.parse(source)
    strings = _Strings(tree)
    found = []
    # Names imported from cmx's command-line modules, and the original name of each.
    imported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "click.testing":
                found.append((node.lineno, "imports click.testing"))
            for alias in node.names:
                if CLI_MODULES.match(node.module) or (node.module == "cmx_cli"
                                                      and alias.name in ("cli", "__main__")):
                    imported[alias.asname or alias.name] = alias.name
                    if alias.name == "__main__":
                        found.append((node.lineno, "imports cmx_cli.__main__"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "cmx_cli.__main__" or alias.name.startswith("click.testing"):
                    found.append((node.lineno, f"imports {alias.name}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "CliRunner":
            found.append((node.lineno, "uses CliRunner"))
        elif isinstance(node, ast.Attribute) and node.attr == "CliRunner":
            found.append((node.lineno, "uses CliRunner"))
        elif isinstance(node, ast.Call):
            found.extend((node.lineno, what) for what in _call_runs(node, imported, strings))
        elif isinstance(node, (ast.List, ast.Tuple)):
            found.extend((node.lineno, what) for what in _argv_runs(node.elts, strings))
    return [f"line {line}: {what}" for line, what in sorted(set(found))]


def _call_runs(node: ast.Call, imported: dict, strings: _Strings) -> list[str]:
    function = node.func
    name = _dotted(function)
    found = []
    # cli(...), main(...), cli.main(...), cli.commands["x"].invoke(...), runner.invoke(cli, ...)
    if isinstance(function, ast.Name) and imported.get(function.id) in ("cli", "main"):
        found.append(f"calls cmx's {imported[function.id]}()")
    if isinstance(function, ast.Attribute) and function.attr in RUNNING_METHODS:
        if _root(function.value) in imported:
            found.append(f"runs {_root(function.value)}.….{function.attr}()")
        if any(_root(argument) in imported for argument in node.args[:1]):
            found.append(f"{function.attr}() of cmx's {_root(node.args[0])}")
    if name.endswith(("run_module", "run_path")) and any(
            text.startswith("cmx_cli") for argument in node.args[:1]
            for text in strings.of(argument)):
        found.append("runs the cmx_cli module with runpy")
    if name.endswith("which") and any(text == "cmx" or text.endswith("/cmx")
                                      for argument in node.args[:1]
                                      for text in strings.of(argument)):
        found.append("looks up the cmx executable")
    if PROCESS_STARTERS.match(name):
        for argument in [*node.args[:1], *(k.value for k in node.keywords if k.arg == "args")]:
            elements = argument.elts if isinstance(argument, (ast.List, ast.Tuple)) else [argument]
            for element in elements:
                if any(SHELL_RUN.search(text) for text in strings.of(element)):
                    found.append(f"{name}() of a command that runs cmx")
    return found


def _argv_runs(elements: list, strings: _Strings) -> list[str]:
    """An argument vector that runs cmx: ``[..., "-m", "cmx_cli", ...]``, ``["-mcmx_cli"]``,
    ``["cmx", ...]``, or ``-c`` with a script that imports cmx's entry point."""
    texts = [strings.of(element) for element in elements]
    found = []
    for index, options in enumerate(texts):
        following = texts[index + 1] if index + 1 < len(texts) else []
        if any(text == "-m" for text in options) and any(
                text.split(".")[0] == "cmx_cli" for text in following):
            found.append("runs python -m cmx_cli")
        if any(re.fullmatch(r"-mcmx_cli(\..*)?", text) for text in options):
            found.append("runs python -m cmx_cli")
        if any(text == "-c" for text in options) and any(
                SHELL_RUN.search(text) for text in following):
            found.append("runs a python -c script that runs cmx")
    # ["cmx", "predict", ...], ["cmx", "--version"], ["cmx", *arguments]; not ("cmx", "model").
    if texts and any(text == "cmx" or text.endswith("/cmx") for text in texts[0]) and (
            len(elements) == 1 or isinstance(elements[1], ast.Starred)
            or any(text in cli.commands or text.startswith("-") for text in texts[1])):
        found.append("runs the cmx executable")
    return found


def _test_modules() -> list[Path]:
    return sorted(path for path in TESTS.glob("*.py")
                  if path != RUNNERS and (path.name.startswith("test_")
                                          or path.name == "conftest.py"))


def test_every_test_module_runs_the_command_line_through_the_shared_runners():
    modules = _test_modules()
    assert len(modules) > 40 and Path(__file__) in modules
    offences = {path.name: cli_runs(path.read_text()) for path in modules}
    offences = {name: found for name, found in offences.items() if found}
    assert not offences, (
        "Run cmx's command line through tests/helpers.py (run_cli, run_cmx, or cmx_command "
        f"with check_internal_error), which fail on an internal error: {offences}")


def test_the_runners_themselves_may_run_the_command_line():
    found = cli_runs(RUNNERS.read_text())
    assert any("CliRunner" in what for what in found), found
    assert any("-m cmx_cli" in what for what in found), found


@pytest.mark.parametrize("source", [
    "from click.testing import CliRunner\nCliRunner().invoke(cli, ['x'])",
    "import click.testing\nclick.testing.CliRunner()",
    "from click import testing\ntesting.CliRunner()",
    "from cmx_cli.cli import cli\ncli(['predict'])",
    "from cmx_cli.cli import cli\ncli.main(['predict'], standalone_mode=False)",
    "from cmx_cli.cli import cli as group\ngroup.main(['predict'])",
    "from cmx_cli.cli import cli\nrunner.invoke(cli, ['predict'])",
    "from cmx_cli.cli import cli\ncli.commands['predict'].main(['a.fa'])",
    "from cmx_cli.cli.commands import predict\npredict.main(['a.fa'])",
    "from cmx_cli.cli import main\nmain()",
    "from cmx_cli.cli.main import main as entry\nentry()",
    "from cmx_cli import __main__",
    "import cmx_cli.__main__",
    "import runpy\nrunpy.run_module('cmx_cli', run_name='__main__')",
    "subprocess.run([sys.executable, '-m', 'cmx_cli', 'predict'])",
    "subprocess.run((sys.executable, '-m', 'cmx_cli.__main__'))",
    "subprocess.run([sys.executable, '-mcmx_cli', 'predict'])",
    "MODULE = 'cmx_cli'\nsubprocess.run([sys.executable, '-m', MODULE])",
    "launcher = [sys.executable, '-m', 'cmx_cli']\nsubprocess.Popen(launcher + ['x'])",
    "subprocess.run(['cmx', 'predict', 'a.fa'])",
    "argv = ['cmx', 'train', '--out', 'run']",
    "argv = ('cmx', *arguments)",
    "subprocess.run(['/venv/bin/cmx', '--version'])",
    "subprocess.run('cmx predict a.fa > out.tsv', shell=True)",
    "subprocess.run(f'{sys.executable} -m cmx_cli predict', shell=True)",
    "command = 'python -m cmx_cli predict'\nsubprocess.check_output(command, shell=True)",
    "os.system('cd run && cmx report . -o r.html')",
    "subprocess.run([sys.executable, '-c', 'from cmx_cli.cli import main; main()'])",
    "subprocess.run(args=['cmx', 'x'])",
    "shutil.which('cmx')",
], ids=lambda source: source.splitlines()[-1][:60])
def test_the_check_finds_each_way_of_running_the_command_line(source):
    assert cli_runs(source), source


@pytest.mark.parametrize("source", [
    "from cmx_cli.cli import cli\nparameter = cli.commands['predict'].params[0]",
    "from cmx_cli.cli import cli\ncli.commands['train'].make_context('train', ['--out', 'r'])",
    "from cmx_cli.cli import render\nrender.bench_tables(report)",
    "from cmx_cli.cli.main import is_internal_error\nis_internal_error(None)",
    "DEMO = ROOT / 'cmx_cli' / 'demo_data'",
    "folders = ('cmx_cli', 'models')",
    "for source, key in (('cmx', 'model'), ('baseline', 'kmer_baseline')): pass",
    "subprocess.run(['bcftools', 'view', '-H', str(path)])",
    "subprocess.run([sys.executable, '-m', 'snakemake', '--cores', '2'])",
    "subprocess.run([sys.executable, '-m', 'torch.distributed.run', *cmx_command('train')[1:]])",
    "assert 'cmx train: test ROC-AUC' in result.stderr",
    "assert 'Example: cmx ' in result.output",
    "run_cmx('predict', fasta, '--model', model)",
    "subprocess.Popen(cmx_command(*arguments), env=cmx_environment())",
    "pipeline.run(config)",
    "mcv.main(['--fasta', 'a.fa'])",
], ids=lambda source: source.splitlines()[-1][:60])
def test_the_check_passes_what_does_not_run_the_command_line(source):
    assert cli_runs(source) == [], source


# --- the runners ----------------------------------------------------------------------------

def _provoke_internal_error(monkeypatch) -> None:
    """Make `cmx report` end in an exception that cmx reports as an internal error."""
    def broken(*arguments, **options):
        raise RuntimeError("a bug the test provokes")

    monkeypatch.setattr("cmx_cli.pipelines.report.run", broken)


def _report(tmp_path: Path) -> list:
    return ["report", tmp_path, "-o", tmp_path / "report.html"]


def test_run_cli_fails_a_command_that_ends_in_an_internal_error(monkeypatch, tmp_path):
    _provoke_internal_error(monkeypatch)
    with pytest.raises(Failed) as caught:
        run_cli(*_report(tmp_path))
    message = str(caught.value)
    assert "cmx report" in message and "RuntimeError: a bug the test provokes" in message


def test_run_cli_passes_an_internal_error_the_test_provokes(monkeypatch, tmp_path):
    _provoke_internal_error(monkeypatch)
    result = run_cli(*_report(tmp_path), internal_error=True)
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)


def test_run_cli_fails_when_the_provoked_internal_error_does_not_come():
    with pytest.raises(Failed) as caught:
        run_cli("--version", internal_error=True)
    assert "internal error expected True, got none" in str(caught.value)


def test_run_cli_passes_errors_that_are_not_internal(monkeypatch, tmp_path):
    """Bad input (CmxError) and a wrong command line each have their own message."""
    def bad_input(*arguments, **options):
        raise CmxError("runs/x: no log.tsv. Hint: give a finished run.")

    monkeypatch.setattr("cmx_cli.pipelines.report.run", bad_input)
    result = run_cli(*_report(tmp_path))
    assert result.exit_code == 1 and "no log.tsv" in result.output
    assert run_cli("report", "--no-such-option").exit_code == 2
    with pytest.raises(Failed):
        run_cli(*_report(tmp_path), internal_error=True)


def test_run_cmx_passes_a_clean_run_and_fails_a_provoked_error_that_does_not_come(tmp_path):
    result = run_cmx("--version", cwd=tmp_path)
    assert result.returncode == 0 and __version__ in result.stdout
    with pytest.raises(Failed) as caught:
        run_cmx("--version", cwd=tmp_path, internal_error=True)
    assert "cmx --version: internal error expected True" in str(caught.value)


#: A ``sitecustomize`` module that makes every command of the cmx process it is loaded into
#: end in an exception that cmx reports as an internal error (a test's stand-in for a bug:
#: no product code needs a switch for it).
PROVOKING_SITE = """
import click

def _invoke(self, context):
    raise RuntimeError("a bug the test provokes")

click.Group.invoke = _invoke
"""


def test_run_cmx_fails_a_process_that_reports_an_internal_error(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(PROVOKING_SITE)
    paths = {"PYTHONPATH": os.pathsep.join([str(site), cmx_environment()["PYTHONPATH"]])}
    with pytest.raises(Failed) as caught:
        run_cmx(*_report(tmp_path), cwd=tmp_path, env=paths)
    message = str(caught.value)
    assert "cmx report" in message and "internal error expected False, got True" in message
    assert "RuntimeError: a bug the test provokes" in message
    result = run_cmx(*_report(tmp_path), cwd=tmp_path, env=paths, internal_error=True)
    assert result.returncode == 1 and INTERNAL_ERROR in result.stderr


@pytest.mark.parametrize("stderr, internal", [
    ("", False),
    ("cmx predict: 20 sequences\n", False),
    ("Error: runs/x: no log.tsv. Hint: give a finished run.\n", False),
    ("Interrupted: cmx stopped before it finished.\n", False),
    ("Error: internal error: OSError: [Errno 30] Read-only file system. Hint: rerun with "
     "--debug for the traceback and report it.\n", True),
    ("[rank 1] Error: internal error: RuntimeError: x. Hint: rerun with --debug.\n", True),
])
def test_check_internal_error_reads_stderr(stderr, internal):
    check_internal_error(["predict"], stderr, internal_error=internal)
    with pytest.raises(Failed):
        check_internal_error(["predict"], stderr, internal_error=not internal)
