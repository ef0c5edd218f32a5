"""Benchmarks of peft-core against Hugging Face PEFT: ``python -m benchmarks.run`` (or ``nox -s bench``)."""
