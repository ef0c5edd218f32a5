"""Reliability tests: one per "must hold" case of docs/reliability.md, with the incumbent's behaviour beside it."""
