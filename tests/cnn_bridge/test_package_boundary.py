"""cnn_bridge builds on gnnprune, never the reverse, and the two can be imported side by side."""
import ast
import subprocess
import sys

from helpers import REPO


def test_gnnprune_reaches_cnn_bridge_only_for_the_cnn_commands():
    probe = """
import sys
import gnnprune, gnnprune.cli
argv = ["prune", "--dataset", "cora", "--out", "x"]
parser = gnnprune.cli.build_parser(argv)
parser.parse_args(argv)
commands = next(a for a in parser._actions if a.dest == "command").choices
print(sorted(commands), sorted(m for m in sys.modules if m.split(".")[0] == "cnn_bridge"))
gnnprune.cli.build_parser(["cnn", "rgp", "--out", "x"]).parse_args(["cnn", "rgp", "--out", "x"])
print("cnn_bridge.cli" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["['cnn', 'export', 'predict', 'prune'] []", "True"]


def _public_top_level_names(package: str) -> dict[str, str]:
    """``{name: module file}`` of the public functions, classes and constants defined at module level."""
    names = {}
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                targets = [node.name]
            elif isinstance(node, ast.Assign):
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                targets = [node.target.id]
            else:
                continue
            names.update({name: path.relative_to(REPO).as_posix() for name in targets if not name.startswith("_")})
    return names


def test_no_public_name_means_two_things():
    gnn, cnn = _public_top_level_names("gnnprune"), _public_top_level_names("cnn_bridge")
    shared = sorted(set(gnn) & set(cnn))
    assert not shared, "defined in both packages: " + ", ".join(f"{n} ({gnn[n]}, {cnn[n]})" for n in shared)
