//! The namespace container launcher behind `sandbox run --mode container`.
pub mod cgroups;
pub mod net;
