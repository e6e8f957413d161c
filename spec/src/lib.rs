//! What `sandbox run` was asked to do and what happened, shared by both modes.
//!
//! The CLI parses its flags into a [`SandboxSpec`] (validated here, once, with errors that name
//! the bad input and the fix); container mode and VM mode both take that spec and both answer
//! with an [`Outcome`]: the exit status, the timings of each phase, and resource figures. The
//! benchmark only ever consumes Outcomes.

mod error;
mod outcome;
mod size;
mod spec;
pub mod userns;

pub use error::SpecError;
pub use outcome::{phase, Outcome, ResourceFigures, Timing};
pub use size::{format_size, parse_size};
pub use spec::{NetMode, Resources, SandboxSpec, Volume, DEFAULT_IMAGE};
pub use userns::IdRange;
