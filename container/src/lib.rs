//! The namespace container launcher behind `sandbox run --mode container`.
