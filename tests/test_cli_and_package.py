"""The console script, the package layout and the shipped checkpoint."""

import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib
from click.testing import CliRunner
from ponder.apps.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_help_and_version():
    runner = CliRunner()
    out = runner.invoke(main, ["--help"])
    assert out.exit_code == 0 and "demo" in out.output
    out = runner.invoke(main, ["--version"])
    assert out.exit_code == 0 and re.search(r"ponder, version \d+\.\d+", out.output)


def test_bad_arguments_are_one_line_errors():
    runner = CliRunner()
    out = runner.invoke(main, ["demo", "--limit", "0"])
    assert out.exit_code == 2 and "Invalid value for '--limit'" in out.output
    out = runner.invoke(main, ["demo", "--level", "99"])
    assert out.exit_code == 2 and "unknown level 99" in out.output
    out = runner.invoke(main, ["nonsense"])
    assert out.exit_code == 2 and "No such command" in out.output


def test_demo_runs_on_the_embedded_model():
    out = CliRunner().invoke(main, ["demo", "--limit", "2", "--n", "2", "--seed", "1"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output.strip().splitlines()[-1])
    assert summary["problems"] == 2 and 0.0 <= summary["pass@1"] <= 1.0
    assert out.output.count("[ok ]") + out.output.count("[bad]") == 4


def test_every_package_folder_is_installed():
    """Each folder with an __init__.py must be listed in pyproject, or it silently goes missing
    from the wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    listed = set(config["packages"])
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            dotted = ".".join([name, *rel.parts]) if rel.parts else name
            assert dotted in listed, f"{dotted} is not in [tool.setuptools].packages"


def test_import_from_repo_root_uses_the_namespace():
    code = "import ponder.engine, ponder.tasks.arith as a; print(a.embedded_model_path())"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert Path(out.stdout.strip(), "model.safetensors").is_file()


def test_strategy_facing_modules_do_not_import_torch():
    code = (
        "import sys, ponder.engine.protocol, ponder.engine.fake_backend; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
