//! The benchmark harness behind `sandbox bench` (filled in by the bench issue).
