//! The one path from what a user asked for to what a sandbox is: [`assemble`] takes a
//! `sandbox run` spec with its image, or an OCI bundle, and returns the [`Plan`] (the sandbox's
//! whole description, which both backends and the guest program read) with the host-side facts
//! that come with it ([`Assembled`]: what the root filesystem is made of, how the workload is
//! entered, the hooks, the annotations).
//!
//! `sandbox run` fills the Plan's isolation part with Docker's defaults (namespaces, mounts,
//! masked and read-only paths, capabilities, seccomp) and runs `sandbox-guest init` as PID 1,
//! the same program a VM boots into; an OCI bundle's `config.json` maps onto the same fields
//! ([`bundle`]) and its process is executed directly, as runc does.

pub mod bundle;
pub mod image;
mod oci;
mod spec;

pub use bundle::Bundle;
pub use image::Image;
pub(crate) use spec::resources as spec_resources;

use crate::error::CoreError;
use crate::state::Mode;
use sandbox_container::hooks::Hook;
use sandbox_image::ResolvedImage;
use sandbox_protocol::Plan;
use sandbox_spec::SandboxSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The OCI hooks, by the point of the lifecycle they run at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    #[serde(default)]
    pub prestart: Vec<Hook>,
    #[serde(default)]
    pub create_runtime: Vec<Hook>,
    #[serde(default)]
    pub create_container: Vec<Hook>,
    #[serde(default)]
    pub start_container: Vec<Hook>,
    #[serde(default)]
    pub poststart: Vec<Hook>,
    #[serde(default)]
    pub poststop: Vec<Hook>,
}

/// What a sandbox's root filesystem is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootKind {
    /// An image's unpacked layers, bottom first (an overlay, or a VM's ext4 disk).
    Layers(Vec<PathBuf>),
    /// A directory (an OCI bundle's `root.path`, absolute).
    Directory(PathBuf),
}

/// How the workload is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `sandbox-guest init` runs as PID 1 and starts the command (`sandbox run`).
    GuestInit,
    /// The command is PID 1 (an OCI bundle's process).
    Direct,
    /// There is no process (an OCI bundle without one): the sandbox ends once started.
    Nothing,
}

/// A [`Plan`] with the host-side facts that come with it.
#[derive(Debug, Clone)]
pub struct Assembled {
    pub plan: Plan,
    pub root: RootKind,
    pub entry: Entry,
    /// For messages and state: the image name, or the bundle directory as given.
    pub source_name: String,
    pub hooks: Hooks,
    pub annotations: BTreeMap<String, String>,
    /// The bundle's `ociVersion` (the runtime-spec version for `sandbox run`).
    pub oci_version: String,
    /// The bundle's `linux.cgroupsPath`.
    pub cgroups_path: Option<String>,
}

/// What to assemble a plan from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// `sandbox run`'s flags and the resolved image.
    Spec {
        spec: &'a SandboxSpec,
        image: &'a ResolvedImage,
    },
    /// An OCI bundle (its config already read and checked).
    Bundle(&'a Bundle),
}

/// The runtime-spec version sandbox implements (reported in states and `features`).
pub const OCI_VERSION: &str = "1.1.0";

/// The one `(spec or bundle, image) → Plan` function, for sandbox `id` in `mode`.
pub fn assemble(source: Source, mode: Mode, id: &str) -> Result<Assembled, CoreError> {
    match source {
        Source::Spec { spec, image } => spec::assemble(spec, image, mode, id),
        Source::Bundle(bundle) => bundle.assemble(mode),
    }
}
