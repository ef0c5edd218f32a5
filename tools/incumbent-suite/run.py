"""Run Hugging Face PEFT's own LoRA/IA3 tests against peft-core through the name-only shim.

    python tools/incumbent-suite/run.py --tests /work/incumbent-tests/peft-0.21.2/tests --out /tmp/suite

copies the incumbent's test files to ``--out/suite`` (adding the ``__init__.py`` the sdist
lacks), runs pytest there with ``shim/`` first on ``sys.path`` (``--incumbent``: without it,
against the real ``peft``), and writes ``--out/<label>.xml`` (JUnit) and ``<label>.log``.
``classify.py`` then sums the results by cause. Nothing here is part of peft-core's CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Files that exercise LoRA/IA3 without the model hub (those that load hub models fail with both libraries).
DEFAULT_FILES = (
    "test_custom_models.py",
    "test_config.py",
    "test_low_level_api.py",
    "test_initialization.py",
    "test_tuners_utils.py",
    "test_other.py",
    "test_mixed.py",
    "test_helpers.py",
)
# pytest -k is case-insensitive: LoRA, IA3, LoraConfig...; methods named *lora* that are not LoRA left out
SELECT = (
    "(lora or ia3) and not "
    "(adalora or tinylora or gralora or randlora or glora or vblora or unilora or delora or xlora)"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=Path, required=True, help="the incumbent's tests/ folder (from its sdist)")
    parser.add_argument("--out", type=Path, required=True, help="scratch folder for the copy and the reports")
    parser.add_argument("--incumbent", action="store_true", help="run against the real peft (no shim): the ceiling")
    parser.add_argument("--files", nargs="*", default=list(DEFAULT_FILES))
    parser.add_argument("-k", default=SELECT, help=f"pytest -k expression (default {SELECT!r})")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per test (pytest-timeout)")
    parser.add_argument("--label", default=None, help="report name (default: shim or incumbent)")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments, after --")
    args = parser.parse_args()

    suite = args.out / "suite"
    if suite.exists():
        shutil.rmtree(suite)
    shutil.copytree(args.tests, suite)
    (suite / "__init__.py").touch()  # the files import each other relatively
    label = args.label or ("incumbent" if args.incumbent else "shim")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if not args.incumbent:
        env["PYTHONPATH"] = os.pathsep.join([str(HERE / "shim"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--tb=line",
        "-rN",
        f"--timeout={args.timeout}",
        "-k",
        args.k,
        f"--junitxml={args.out / f'{label}.xml'}",
        *args.files,
        *args.pytest_args,
    ]
    with (args.out / f"{label}.log").open("w") as log:
        return subprocess.run(command, cwd=suite, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


if __name__ == "__main__":
    raise SystemExit(main())
