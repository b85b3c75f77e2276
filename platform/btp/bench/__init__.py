"""Benchmarks: commands that print figures (`btp bench model`, `btp bench ingest`)."""
