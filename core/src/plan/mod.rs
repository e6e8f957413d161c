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

/// Reads an OCI `LinuxResources` object (`update --resources`), naming a bad field.
pub fn parse_resources(json: &str) -> Result<sandbox_protocol::isolation::ResourcePlan, CoreError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let r: oci::Resources = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| CoreError::Bundle(format!("resources JSON: at {}: {}", e.path(), e.inner())))?;
    bundle::resources(&r)
}

/// What `exec` is asked to run: an OCI `process` object (what containerd and podman send), or a
/// command with overrides of the container's own process.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// `--process FILE`'s contents.
    pub process_json: Option<String>,
    pub args: Vec<String>,
    /// `KEY=VALUE`, added to the container's environment.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub user: Option<(u32, u32)>,
    pub terminal: bool,
    /// Capabilities added to the container's sets.
    pub caps: Vec<String>,
    pub no_new_privileges: bool,
}

/// The Plan of the process `exec` runs: the container's own Plan (its isolation, seccomp
/// profile, default identity), with the process replaced or overridden as `request` says.
pub fn exec_plan(
    container: &sandbox_protocol::Plan,
    request: &ExecRequest,
) -> Result<sandbox_protocol::Plan, CoreError> {
    let mut plan = container.clone();
    if let Some(json) = &request.process_json {
        let mut de = serde_json::Deserializer::from_str(json);
        let p: oci::Process = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| CoreError::Bundle(format!("process JSON: at {}: {}", e.path(), e.inner())))?;
        if p.args.is_empty() {
            return Err(CoreError::Bundle(
                "the process has no args: give the command to run".into(),
            ));
        }
        bundle::apply_process(&mut plan, &p)?;
        return Ok(plan);
    }
    if request.args.is_empty() {
        return Err(CoreError::Bundle(
            "no command: give --process FILE or the command after the id".into(),
        ));
    }
    plan.command = request.args.clone();
    for kv in &request.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        plan.env.retain(|(name, _)| name != k);
        plan.env.push((k.to_string(), v.to_string()));
    }
    if let Some(cwd) = &request.cwd {
        plan.workdir = Some(cwd.clone());
    }
    if request.user.is_some() {
        plan.user = request.user;
    }
    plan.process.terminal = request.terminal;
    plan.process.no_new_privileges |= request.no_new_privileges;
    if !request.caps.is_empty() {
        let mut sets = plan.process.capabilities.clone().unwrap_or_default();
        for cap in &request.caps {
            if sandbox_container::caps::number(cap).is_none() {
                return Err(CoreError::Bundle(format!(
                    "--cap {cap}: unknown capability: use names like CAP_KILL"
                )));
            }
            for set in [
                &mut sets.bounding,
                &mut sets.effective,
                &mut sets.permitted,
                &mut sets.inheritable,
            ] {
                if !set.contains(cap) {
                    set.push(cap.clone());
                }
            }
        }
        plan.process.capabilities = Some(sets);
    }
    Ok(plan)
}
