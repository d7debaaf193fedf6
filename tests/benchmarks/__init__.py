"""`make bench`: each measurement beside its baseline from the same run (docs/benchmarks.md)."""
