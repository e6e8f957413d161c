//! What the host and the guest program share, defined once.
//!
//! Both sides of a sandbox use this crate: the guest program (`sandbox-guest`, PID 1 of every
//! sandbox), and the host crates that start sandboxes (the container launcher, the VMM, the
//! runtime core). It holds:
//! - [`plan`]: the host↔guest contract: the [`Plan`] (the sandbox's whole description, and the
//!   guest program's whole input), the ready channel, and the boot/exit device; [`isolation`]:
//!   the Plan's process, isolation and resource parts, in the OCI runtime spec's shape;
//! - [`agent`]: the guest agent's protocol (frames and requests over vsock), which a VM's init
//!   serves and the host's client speaks;
//! - [`paths`]: where sandbox keeps its state and caches on the host, and where it finds the
//!   guest program;
//! - [`trace`]: the `trace +µs step: values (duration)` lines both modes print, and the clock
//!   they share;
//! - [`mountinfo`] and [`smaps`]: the one parser of each `/proc` file that host and guest read;
//! - [`ifconfig`]: bringing up `lo` and giving an interface its address, which the guest's init
//!   does in a VM and the container launcher does for a container.
//!
//! It depends on nothing of the project, so the VMM can use it without pulling in the launcher.

pub mod agent;
pub mod ifconfig;
pub mod isolation;
pub mod mountinfo;
pub mod paths;
pub mod plan;
pub mod smaps;
pub mod trace;

pub use plan::*;
