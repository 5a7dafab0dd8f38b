"""The documentation stays true to the code.

Every option of the ``gnnprune`` parser is in docs/cli.md; every ``gnnprune`` and benchmark command
written in README.md, docs/ and the results READMEs parses with the real parser; the fast ones run
as written; the README's Python example runs; links resolve; project text carries no development
history; every results folder says how it was produced.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import re
import shlex

import pytest

from gnnprune import cli
from helpers import REPO

README = REPO / "README.md"
CLI_DOC = REPO / "docs" / "cli.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
RESULT_READMES = sorted((REPO / "results").rglob("README.md"))
USER_TEXT = [README, *DOCS, *RESULT_READMES]
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
HISTORY = re.compile(r"session [0-9]|session[0-9]|commit [0-9a-f]{7}", re.I)


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("gnnprune",)):
    """``(command words, parser)`` for every command that takes options (subcommands walked)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaf_parsers(sub, (*path, name))


LEAVES = list(_leaf_parsers(cli.build_parser()))


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted({s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")})


def _code_blocks(path, languages=("", "bash", "sh", "console")) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang in languages]


def _commands(path) -> list[str]:
    """Shell commands in the code blocks of ``path``: continuations joined, comments dropped, each
    ``&&`` part on its own."""
    commands = []
    for block in _code_blocks(path):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def _documented(prefixes: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(path.relative_to(REPO).as_posix(), command) for path in USER_TEXT for command in _commands(path)
            if command.startswith(prefixes) and "[" not in command]  # [...] marks an optional placeholder


GNNPRUNE_COMMANDS = _documented(("gnnprune ",))
BENCHMARK_COMMANDS = _documented(("python -m benchmarks.", "python benchmarks/", "GNNPRUNE_MALLOC="))


PLACEHOLDERS = {"D": "cora", "M": "gcn"}  # `--dataset D --model M` in the docs stand for any data set and model


def _parse(argv: list[str]) -> argparse.Namespace:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return cli.build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"gnnprune {shlex.join(argv)}: {stderr.getvalue().strip()}")


# docs/cli.md covers the parser ----------------------------------------------------------------------
@pytest.mark.parametrize("words,parser", LEAVES, ids=[" ".join(words) for words, _ in LEAVES])
def test_cli_doc_names_every_command_and_option(words, parser):
    text = CLI_DOC.read_text()
    assert f"`{' '.join(words)}`" in text, f"docs/cli.md has no section for `{' '.join(words)}`"
    missing = [o for o in _options(parser) if not re.search(rf"`{re.escape(o)}[` =]", text)]
    assert not missing, f"docs/cli.md does not document {', '.join(missing)} of `{' '.join(words)}`"


def test_the_parser_walk_reaches_every_command():
    names = {" ".join(words) for words, _ in LEAVES}
    assert {"gnnprune prune", "gnnprune cnn rgp", "gnnprune cnn prune"} <= names
    prune = dict((" ".join(w), p) for w, p in LEAVES)["gnnprune prune"]
    assert {"--dataset", "--edge-ranking", "--resume", "--fanout"} <= set(_options(prune))


# documented commands parse, the fast ones run ------------------------------------------------------
def test_docs_hold_commands_to_check():
    assert len(GNNPRUNE_COMMANDS) >= 10 and len(BENCHMARK_COMMANDS) >= 5


@pytest.mark.parametrize("where,command", GNNPRUNE_COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in GNNPRUNE_COMMANDS])
def test_documented_gnnprune_command_parses(where, command):
    argv = [PLACEHOLDERS.get(word, word) for word in shlex.split(command)[1:]]
    args = _parse(argv)
    if args.command == "prune":
        try:
            cli._config_from_args(args)  # model, data set name, options and schedule checked as the CLI does
        except cli.UsageError as exc:
            pytest.fail(f"{where}: {command}: {exc}")


@functools.lru_cache(maxsize=None)
def _benchmark_help(module: str) -> str:
    """``python -m MODULE --help``, in this process (the scripts set ``malloc`` up only as ``__main__``)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        importlib.import_module(module).main(["--help"])
    assert done.value.code == 0, f"python -m {module} --help exited {done.value.code}"
    return out.getvalue()


@pytest.mark.parametrize("where,command", BENCHMARK_COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in BENCHMARK_COMMANDS])
def test_documented_benchmark_command_names_real_options(where, command):
    words = [w for w in shlex.split(command) if "=" not in w or w.startswith("-")]
    script = words[2] if words[1] == "-m" else words[1].removesuffix(".py").replace("/", ".")
    help_text = _benchmark_help(script)
    unknown = [w.split("=")[0] for w in words if w.startswith("--") and
               not re.search(rf"(?<![\w-]){re.escape(w.split('=')[0])}(?![\w-])", help_text)]
    assert not unknown, f"{where}: {command}: {script} has no option {', '.join(unknown)}"


@pytest.mark.parametrize("words", [w for w, _ in LEAVES], ids=[" ".join(w) for w, _ in LEAVES])
def test_help_forms_run(words, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([*words[1:], "--help"])
    assert done.value.code == 0
    assert "--out" in capsys.readouterr().out


def _prune_argv(command: str, out) -> list[str]:
    argv = shlex.split(command)[1:]
    at = argv.index("--out")
    return [*argv[:at], *argv[at + 2:], "--out", str(out), "--no-progress"]


def test_fast_documented_prune_commands_run_as_written(tmp_path):
    """Commands of at most 5 epochs (synthetic data) run exactly as documented, into a fresh folder."""
    fast = [c for _, c in GNNPRUNE_COMMANDS
            if c.startswith("gnnprune prune") and int(_parse(shlex.split(c)[1:]).epochs or 200) <= 5]
    assert fast, "no fast gnnprune prune command in the docs"
    for i, command in enumerate(fast):
        assert cli.main(_prune_argv(command, tmp_path / f"run-{i}")) == 0, command


def test_readme_quick_start_runs_with_few_epochs(tmp_path, cora, capsys, monkeypatch):
    """The README's quick-start command, shortened to 6 epochs and width 16."""
    monkeypatch.chdir(REPO)  # data is found from the repository root, as in the README
    quick = [c for c in _commands(README) if c.startswith("gnnprune prune") and "--seed 0" in c]
    assert len(quick) == 1
    argv = _prune_argv(quick[0], tmp_path / "run") + ["--epochs", "6", "--hidden", "16"]
    assert cli.main(argv) == 0
    assert (tmp_path / "run" / "seed-0" / "pruned_graph.pt").exists()
    assert "wrote" in capsys.readouterr().out


# The README's Python examples run as written except for these rewrites to a few epochs; an example
# that none of them shortens fails the test, so a new example brings its own rewrite here.
FEW_EPOCHS = {"CGPConfig(prune_start=10, prune_end=150)": "CGPConfig(prune_start=1, prune_end=4)",
              "TrainConfig(": "TrainConfig(epochs=6, ",
              "features=0.5))": "features=0.5), epochs=6)"}


def test_readme_python_examples_run_with_few_epochs(cora, monkeypatch, capsys):
    blocks = _code_blocks(README, languages=("python",))
    assert blocks, "README has no python example"
    monkeypatch.chdir(REPO)
    for i, block in enumerate(blocks):
        short = functools.reduce(lambda code, rule: code.replace(*rule), FEW_EPOCHS.items(), block)
        assert short != block, f"README python example {i} has no few-epoch rewrite in FEW_EPOCHS"
        exec(compile(short, f"README.md python example {i}", "exec"), {"__name__": "readme_example"})
    assert " 2639 717" in capsys.readouterr().out  # Cora's kept edges and features at 0.5 / 0.5, exactly


# text and results layout ------------------------------------------------------------------------
def test_readme_is_short_and_starts_with_the_two_setup_lines():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    first = FENCE.search(text).group(2).splitlines()
    assert len(first) == 2 and first[0].startswith("python3 -m venv .venv") and first[1].startswith(". .venv/bin/activate")


def test_project_text_has_no_development_history():
    sources = [*USER_TEXT, *(REPO / "results").rglob("*.md"),
               *(REPO / "gnnprune").rglob("*.py"), *(REPO / "cnn_bridge").rglob("*.py")]
    hits = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in sources
            for n, line in enumerate(p.read_text().splitlines(), 1) if HISTORY.search(line)]
    bare_hash = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")
    hits += [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in USER_TEXT
             for n, line in enumerate(p.read_text().splitlines(), 1) if bare_hash.search(line)]
    assert not hits, "\n".join(hits)


def test_every_results_folder_says_how_it_was_produced():
    folders = [p for p in (REPO / "results").rglob("*") if p.is_dir() and not p.name.startswith(".")]
    assert folders
    for folder in folders:
        name = folder.relative_to(REPO).as_posix()
        assert not re.search(r"session|run-?\d|\d{4}-\d{2}-\d{2}", folder.name), f"{name} is named after its history"
        readme = folder / "README.md"
        assert readme.exists(), f"{name} has no README.md"
        spans = _commands(readme) + re.findall(r"`([^`]+)`", readme.read_text())
        commands = [c for c in spans if c.startswith(("gnnprune ", "python -m ", "python benchmarks/", "GNNPRUNE_MALLOC="))]
        assert commands, f"{name}/README.md names no command"


def test_relative_links_resolve():
    link = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
    broken = [f"{p.relative_to(REPO)}: {target}" for p in USER_TEXT for target in link.findall(p.read_text())
              if "://" not in target and not (p.parent / target).exists()]
    assert not broken, "\n".join(broken)
