//! The guest kernel: built from Debian's linux-source-6.1 with the fragment in this folder, cached by content.
//!
//! Layout under `<cache>` (default `sandbox_cache()/kernel`):
//! - `src-<srckey>/`: the unpacked source, shared by every variant (built out of tree);
//! - `build-<key>/`: the `make O=` build directory of one variant (its `.config`, objects, `build.log`),
//!   removed once the variant's entry is published;
//! - `<key>/`: the finished artifacts `bzImage`, `vmlinux`, `config`, `build.log`, and
//!   `inputs.json` (the record of the key's inputs, [`KeyInputs`]), which appear by rename only
//!   once complete, so a failed or interrupted build leaves no entry;
//! - `<key>.lock`: the flock that serialises builders of one key (the entry itself appears by rename);
//! - `source-ids/`: the tarball's sha256 remembered by path, size and mtime (hashed once).
//!
//! The key hashes the source tarball's sha256, the fragment's symbols (plus any extra lines; not
//! its comments) and [`BUILDER_VERSION`]; nothing is rebuilt while it is unchanged.
//!
//! # Finding a kernel without the source
//!
//! [`cached`] looks the key up when the source tarball is there. When it is absent (a machine
//! that was shipped a built entry, like the lab's L1, or a host whose linux-source package was
//! removed after the build), the key cannot be computed, and [`cached`] instead takes the newest
//! complete entry whose `inputs.json` records the current [`BUILDER_VERSION`] and the sha256 of
//! the current fragment symbols (the fragment is compiled into this binary, so such an entry is
//! the kernel this binary asks for, built from whichever linux-source it recorded). Newest is by
//! the `vmlinux` file's modification time. Entries published before `inputs.json` existed get it
//! written on the next [`cached`] or [`build`] that finds them by key, so shipping the entry found
//! by [`cached`] on the host ships its record too.

mod error;
mod format;
mod fragment;
mod inputs;
mod lock;
mod make;
mod progress;
mod source;
mod sweep;
mod tools;

pub use error::KernelError;
pub use format::{validate_kernel_file, KernelFormat};
pub use fragment::{fragment_symbols, FRAGMENT};
pub use inputs::{KeyInputs, INPUTS_FILE};

use progress::Progress;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
pub use sweep::{sweep_cache, Sweep};

/// Changes whenever the way kernels are built changes, so that old cache entries are not reused.
pub const BUILDER_VERSION: &str = "sandbox-kernel builder 2";
/// Where Debian's linux-source-6.1 package puts the source tarball.
pub const DEFAULT_SOURCE: &str = "/usr/src/linux-source-6.1.tar.xz";

/// The files of a built kernel, all inside its cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelArtifacts {
    /// The compressed kernel with the x86 boot protocol header.
    pub bzimage: PathBuf,
    /// The uncompressed ELF kernel (bootable through its PVH entry point).
    pub vmlinux: PathBuf,
    /// The `.config` it was built with.
    pub config: PathBuf,
    /// The output of every make step.
    pub build_log: PathBuf,
    /// The record of the key's inputs (`inputs.json`; absent in entries published before it
    /// existed until a lookup by key writes it).
    pub inputs: PathBuf,
    /// The cache key (the entry's directory name).
    pub key: String,
}

impl KernelArtifacts {
    fn in_dir(dir: &Path, key: &str) -> Self {
        KernelArtifacts {
            bzimage: dir.join("bzImage"),
            vmlinux: dir.join("vmlinux"),
            config: dir.join("config"),
            build_log: dir.join("build.log"),
            inputs: dir.join(INPUTS_FILE),
            key: key.to_string(),
        }
    }

    fn complete(&self) -> bool {
        [&self.bzimage, &self.vmlinux, &self.config]
            .iter()
            .all(|p| p.is_file())
    }
}

/// What to build from, where to cache it, and how.
#[derive(Debug, Clone)]
pub struct KernelOptions {
    /// The source tarball (default [`DEFAULT_SOURCE`]).
    pub source: PathBuf,
    /// The cache directory (default `sandbox_cache()/kernel`).
    pub cache_dir: PathBuf,
    /// Lines appended after the fragment (`CONFIG_X=y`); they join the verified set and the key.
    pub extra_fragment: Vec<String>,
    /// Parallel make jobs (default: the number of CPUs).
    pub jobs: usize,
    /// Whether to draw progress on stderr.
    pub progress: bool,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions {
            source: PathBuf::from(DEFAULT_SOURCE),
            cache_dir: sandbox_protocol::paths::sandbox_cache().join("kernel"),
            extra_fragment: Vec::new(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            progress: true,
        }
    }
}

/// The fragment of one variant: its text, its symbols, and the sha256 of the normalised symbols.
struct Fragment {
    text: String,
    symbols: Vec<(String, String)>,
    sha256: String,
    normalized: String,
}

/// The resolved inputs of one variant.
struct Plan {
    key: String,
    source_sha: String,
    fragment: Fragment,
}

impl Plan {
    /// The record of these inputs for the entry's `inputs.json`.
    fn inputs(&self, opts: &KernelOptions) -> KeyInputs {
        let (source_package, source_package_version) = inputs::source_package(&opts.source);
        KeyInputs {
            key: self.key.clone(),
            builder_version: BUILDER_VERSION.to_string(),
            fragment_sha256: self.fragment.sha256.clone(),
            source_sha256: self.source_sha.clone(),
            source: opts.source.clone(),
            source_package,
            source_package_version,
        }
    }
}

impl KernelOptions {
    fn fragment_text(&self) -> String {
        let mut text = FRAGMENT.to_string();
        if !self.extra_fragment.is_empty() {
            text.push_str("\n# Extra lines (KernelOptions::extra_fragment)\n");
            for line in &self.extra_fragment {
                text.push_str(line.trim());
                text.push('\n');
            }
        }
        text
    }

    fn fragment(&self) -> Result<Fragment, KernelError> {
        let text = self.fragment_text();
        let symbols = fragment::parse(&text)?;
        // The symbols, not the text: editing a comment in the fragment rebuilds nothing.
        let normalized: String = symbols
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect();
        Ok(Fragment {
            sha256: inputs::fragment_sha256(&normalized),
            text,
            symbols,
            normalized,
        })
    }

    fn plan(&self) -> Result<Plan, KernelError> {
        let fragment = self.fragment()?;
        fs::create_dir_all(&self.cache_dir)
            .map_err(|e| KernelError::io("cannot create", &self.cache_dir, e))?;
        let source_sha = source::tarball_sha256(&self.source, &self.cache_dir)?;
        let mut hasher = Sha256::new();
        for part in [BUILDER_VERSION, &source_sha, &fragment.normalized] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        let key = source::hex(&hasher.finalize())[..16].to_string();
        Ok(Plan {
            key,
            source_sha,
            fragment,
        })
    }

    /// The sha256 of the fragment's symbols (one `CONFIG_NAME=value` line each, extra lines
    /// included, comments not), as recorded in `inputs.json`; needs no source.
    pub fn fragment_sha256(&self) -> Result<String, KernelError> {
        Ok(self.fragment()?.sha256)
    }

    /// The record of the key these options build (what its entry's `inputs.json` holds),
    /// without building anything; needs the source tarball.
    pub fn key_inputs(&self) -> Result<KeyInputs, KernelError> {
        Ok(self.plan()?.inputs(self))
    }

    /// The cache key these options build, without building anything.
    pub fn key(&self) -> Result<String, KernelError> {
        Ok(self.plan()?.key)
    }
}

/// Produces the verified `.config` of the default kernel and returns its path.
pub fn config(opts: &KernelOptions) -> Result<PathBuf, KernelError> {
    let plan = opts.plan()?;
    let _lock = lock::lock(&opts.cache_dir.join(format!("{}.lock", plan.key)))?;
    let mut progress = Progress::new(opts.progress);
    configure(opts, &plan, &mut progress)
}

/// Builds (or finds in the cache) the kernel these options describe.
pub fn build(opts: &KernelOptions) -> Result<KernelArtifacts, KernelError> {
    let plan = opts.plan()?;
    let entry = opts.cache_dir.join(&plan.key);
    let artifacts = KernelArtifacts::in_dir(&entry, &plan.key);
    if artifacts.complete() {
        // Best effort, as in `cached_with`: a read-only cache still serves its kernel.
        let _ = ensure_inputs(opts, &plan, &artifacts);
        return Ok(artifacts);
    }
    let _lock = lock::lock(&opts.cache_dir.join(format!("{}.lock", plan.key)))?;
    if artifacts.complete() {
        // Best effort, as in `cached_with`: a read-only cache still serves its kernel.
        let _ = ensure_inputs(opts, &plan, &artifacts);
        return Ok(artifacts);
    }
    let mut progress = Progress::new(opts.progress);
    let config = configure(opts, &plan, &mut progress)?;
    let build_dir = config.parent().unwrap_or(&opts.cache_dir).to_path_buf();
    let src = source_dir(opts, &plan);
    let log = build_dir.join("build.log");
    let args = vec![
        format!("-j{}", opts.jobs.max(1)),
        "bzImage".to_string(),
        "vmlinux".to_string(),
    ];
    make::run(&src, &build_dir, &args, &log, "compiling", true, &mut progress)?;
    publish(opts, &plan, &build_dir, &entry)?;
    // The objects (hundreds of MiB) are not needed once the entry exists: the key never builds again.
    let _ = fs::remove_dir_all(&build_dir);
    Ok(artifacts)
}

/// The default kernel's artifacts if they are already built (see [`cached_with`]).
pub fn cached() -> Option<KernelArtifacts> {
    cached_with(&KernelOptions::default())
}

/// The artifacts of `opts` if they are already built: the entry of their key, or, when the
/// source tarball is absent, the newest complete entry recording the same builder version and
/// fragment (see the crate docs). An entry found by key that lacks `inputs.json` gets it written
/// (if the cache is read-only it stays without, and is still returned).
pub fn cached_with(opts: &KernelOptions) -> Option<KernelArtifacts> {
    match opts.plan() {
        Ok(plan) => {
            let artifacts = KernelArtifacts::in_dir(&opts.cache_dir.join(&plan.key), &plan.key);
            if !artifacts.complete() {
                return None;
            }
            let _ = ensure_inputs(opts, &plan, &artifacts);
            Some(artifacts)
        }
        Err(KernelError::SourceMissing(_)) => {
            let fragment = opts.fragment().ok()?;
            let complete = |dir: &Path, key: &str| KernelArtifacts::in_dir(dir, key).complete();
            let (dir, key) =
                inputs::newest_matching(&opts.cache_dir, BUILDER_VERSION, &fragment.sha256, complete)?;
            Some(KernelArtifacts::in_dir(&dir, &key))
        }
        Err(_) => None,
    }
}

/// Writes `inputs.json` into an entry published before it was recorded.
fn ensure_inputs(opts: &KernelOptions, plan: &Plan, artifacts: &KernelArtifacts) -> Result<(), KernelError> {
    if artifacts.inputs.is_file() {
        return Ok(());
    }
    let entry = opts.cache_dir.join(&plan.key);
    plan.inputs(opts).write(&entry)
}

fn source_dir(opts: &KernelOptions, plan: &Plan) -> PathBuf {
    opts.cache_dir.join(format!("src-{}", &plan.source_sha[..16]))
}

/// tinyconfig, then the fragment, then olddefconfig, then verification; the caller holds the key's lock.
fn configure(opts: &KernelOptions, plan: &Plan, progress: &mut Progress) -> Result<PathBuf, KernelError> {
    tools::check_build_tools()?;
    let src = source::ensure_unpacked(&opts.source, &plan.source_sha, &opts.cache_dir, progress)?;
    let build_dir = opts.cache_dir.join(format!("build-{}", plan.key));
    let fresh = !build_dir.exists();
    fs::create_dir_all(&build_dir).map_err(|e| KernelError::io("cannot create", &build_dir, e))?;
    let result = configure_in(&src, &build_dir, plan, progress);
    if result.is_err() && fresh {
        // Only a config was made here: remove it rather than leave a half-made build directory.
        let _ = fs::remove_dir_all(&build_dir);
    }
    result
}

fn configure_in(
    src: &Path,
    build_dir: &Path,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<PathBuf, KernelError> {
    let log = build_dir.join("build.log");
    fs::write(&log, "").map_err(|e| KernelError::io("cannot create build log", &log, e))?;
    make::run(
        src,
        build_dir,
        &["tinyconfig".to_string()],
        &log,
        "tinyconfig",
        false,
        progress,
    )?;
    let config = build_dir.join(".config");
    let mut text = fs::read_to_string(&config).map_err(|e| KernelError::io("cannot read", &config, e))?;
    text.push_str("\n# sandbox fragment\n");
    text.push_str(&plan.fragment.text);
    fs::write(&config, text).map_err(|e| KernelError::io("cannot write", &config, e))?;
    make::run(
        src,
        build_dir,
        &["olddefconfig".to_string()],
        &log,
        "olddefconfig",
        false,
        progress,
    )?;
    fragment::verify(&config, &plan.fragment.symbols)?;
    Ok(config)
}

/// Copies the finished files into a temporary directory and renames it to the entry.
fn publish(opts: &KernelOptions, plan: &Plan, build_dir: &Path, entry: &Path) -> Result<(), KernelError> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}-", plan.key))
        .tempdir_in(&opts.cache_dir)
        .map_err(|e| KernelError::io("cannot create a directory in", &opts.cache_dir, e))?;
    let files = [
        ("arch/x86/boot/bzImage", "bzImage"),
        ("vmlinux", "vmlinux"),
        (".config", "config"),
        ("build.log", "build.log"),
    ];
    for (from, to) in files {
        let from = build_dir.join(from);
        fs::copy(&from, tmp.path().join(to)).map_err(|e| KernelError::io("cannot copy", &from, e))?;
    }
    plan.inputs(opts).write(tmp.path())?;
    let staged = tmp.keep();
    fs::rename(&staged, entry).map_err(|e| {
        let _ = fs::remove_dir_all(&staged);
        KernelError::io("cannot publish the kernel to", entry, e)
    })
}
