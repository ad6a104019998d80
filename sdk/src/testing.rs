//! Test harness for plugin authors (finite differences, invariants); see docs/writing-plugins.md.
