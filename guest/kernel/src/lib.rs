//! The guest kernel: built from Debian's linux-source-6.1 with the fragment in this folder, cached by content.
//!
//! Layout under `<cache>` (default `sandbox_cache()/kernel`):
//! - `src-<srckey>/`: the unpacked source, shared by every variant (built out of tree);
//! - `build-<key>/`: the `make O=` build directory of one variant (its `.config`, objects, `build.log`),
//!   removed once the variant's entry is published;
//! - `<key>/`: the finished artifacts `bzImage`, `vmlinux`, `config`, `build.log`, which appear by
//!   rename only once complete, so a failed or interrupted build leaves no entry;
//! - `<key>.lock`: the flock that serialises builders of one key (the entry itself appears by rename).
//!
//! The key hashes the source tarball's sha256, the fragment's symbols (plus any extra lines; not
//! its comments) and [`BUILDER_VERSION`]; nothing is rebuilt while it is unchanged.

mod error;
mod format;
mod fragment;
mod lock;
mod make;
mod progress;
mod source;
mod tools;

pub use error::KernelError;
pub use format::{validate_kernel_file, KernelFormat};
pub use fragment::{fragment_symbols, FRAGMENT};

use progress::Progress;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

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
            cache_dir: sandbox_guest::paths::sandbox_cache().join("kernel"),
            extra_fragment: Vec::new(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            progress: true,
        }
    }
}

/// The resolved inputs of one variant.
struct Plan {
    key: String,
    source_sha: String,
    fragment: String,
    symbols: Vec<(String, String)>,
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

    fn plan(&self) -> Result<Plan, KernelError> {
        let fragment = self.fragment_text();
        let symbols = fragment::parse(&fragment)?;
        fs::create_dir_all(&self.cache_dir)
            .map_err(|e| KernelError::io("cannot create", &self.cache_dir, e))?;
        let source_sha = source::tarball_sha256(&self.source, &self.cache_dir)?;
        let mut hasher = Sha256::new();
        // The symbols, not the text: editing a comment in the fragment rebuilds nothing.
        let normalized: String = symbols
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect();
        for part in [BUILDER_VERSION, &source_sha, &normalized] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        let key = source::hex(&hasher.finalize())[..16].to_string();
        Ok(Plan {
            key,
            source_sha,
            fragment,
            symbols,
        })
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
        return Ok(artifacts);
    }
    let _lock = lock::lock(&opts.cache_dir.join(format!("{}.lock", plan.key)))?;
    if artifacts.complete() {
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

/// The default kernel's artifacts if they are already built.
pub fn cached() -> Option<KernelArtifacts> {
    cached_with(&KernelOptions::default())
}

/// The artifacts of `opts` if they are already built.
pub fn cached_with(opts: &KernelOptions) -> Option<KernelArtifacts> {
    let plan = opts.plan().ok()?;
    let artifacts = KernelArtifacts::in_dir(&opts.cache_dir.join(&plan.key), &plan.key);
    artifacts.complete().then_some(artifacts)
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
    text.push_str(&plan.fragment);
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
    fragment::verify(&config, &plan.symbols)?;
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
    let staged = tmp.keep();
    fs::rename(&staged, entry).map_err(|e| {
        let _ = fs::remove_dir_all(&staged);
        KernelError::io("cannot publish the kernel to", entry, e)
    })
}
