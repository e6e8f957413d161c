//! The L1 kernel: Debian's cloud kernel (`linux-image-cloud-amd64`), fetched with
//! `apt-get download`, unpacked with `dpkg-deb -x`, and cached under `<cache>/lab/` keyed by the
//! package name and version (`kernel-<package>_<version>/`: `vmlinuz`, `config`, `release`, and
//! `modules/`, the package's `lib/modules/<release>/kernel` tree).
//!
//! The entry appears by rename only once complete, under a flock, so an interrupted fetch leaves
//! nothing behind but its temporary directory, which the next fetch removes.

use crate::lock::CacheLock;
use crate::progress::Progress;
use crate::tools::{require, run_capture};
use crate::LabError;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

/// The Debian meta-package whose dependency names the current cloud kernel.
pub const L1_KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

/// A fetched L1 kernel, all inside its cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L1Kernel {
    /// The cache entry directory.
    pub dir: PathBuf,
    /// The compressed kernel QEMU boots with `-kernel`.
    pub vmlinuz: PathBuf,
    /// The root of the module tree (`kernel/` of `lib/modules/<release>/`).
    pub modules: PathBuf,
    /// The kernel release (`uname -r` inside L1), e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The Debian package and version it came from.
    pub package: String,
    pub version: String,
}

impl L1Kernel {
    fn in_dir(dir: &Path, package: &str, version: &str) -> Result<L1Kernel, LabError> {
        let release_path = dir.join("release");
        let release = fs::read_to_string(&release_path)
            .map_err(|e| LabError::io("read", &release_path, e))?
            .trim()
            .to_string();
        Ok(L1Kernel {
            dir: dir.to_path_buf(),
            vmlinuz: dir.join("vmlinuz"),
            modules: dir.join("modules"),
            release,
            package: package.to_string(),
            version: version.to_string(),
        })
    }
}

/// The concrete kernel package (`linux-image-6.1.0-N-cloud-amd64`) and its candidate version,
/// asked of apt's local lists (no network).
pub fn resolve_package() -> Result<(String, String), LabError> {
    let apt_cache = require("apt-cache", "apt")?;
    let not_found = |detail: String| LabError::PackageNotFound {
        package: L1_KERNEL_PACKAGE.into(),
        detail,
    };
    let deps = run_capture(
        &apt_cache,
        &[OsStr::new("depends"), OsStr::new(L1_KERNEL_PACKAGE)],
    )
    .map_err(|e| not_found(format!(" ({e})")))?;
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| not_found(" (it names no linux-image dependency)".into()))?
        .to_string();
    let show = run_capture(
        &apt_cache,
        &[
            OsStr::new("show"),
            OsStr::new("--no-all-versions"),
            OsStr::new(&package),
        ],
    )
    .map_err(|e| not_found(format!(" ({e})")))?;
    let version = show
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| not_found(format!(" (`apt-cache show {package}` gives no version)")))?;
    Ok((package, version))
}

fn entry_name(package: &str, version: &str) -> String {
    let clean = |s: &str| s.replace(|c: char| !(c.is_ascii_alphanumeric() || ".-+".contains(c)), "_");
    format!("kernel-{}_{}", clean(package), clean(version))
}

/// The newest complete cache entry, for hosts whose apt lists are gone (offline CI).
fn newest_cached(lab_dir: &Path) -> Option<L1Kernel> {
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(lab_dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("kernel-"))
        .filter(|e| e.path().join("release").is_file())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    entries.sort();
    let (_, dir) = entries.pop()?;
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let (package, version) = name.strip_prefix("kernel-")?.split_once('_')?;
    L1Kernel::in_dir(&dir, package, version).ok()
}

/// apt's package lists; when their directory has not changed, neither has the answer of
/// [`resolve_package`] (asking apt-cache costs about a second).
const APT_LISTS: &str = "/var/lib/apt/lists";

fn lists_stamp() -> Option<String> {
    let modified = fs::metadata(APT_LISTS).ok()?.modified().ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(since.as_nanos().to_string())
}

/// [`resolve_package`], remembered in `<lab>/kernel-resolved` while apt's lists stay the same.
fn resolve_package_memo(lab_dir: &Path) -> Result<(String, String), LabError> {
    let memo = lab_dir.join("kernel-resolved");
    let stamp = lists_stamp();
    if let (Some(stamp), Ok(text)) = (&stamp, fs::read_to_string(&memo)) {
        let mut f = text.split_whitespace();
        if let (Some(s), Some(p), Some(v)) = (f.next(), f.next(), f.next()) {
            if s == stamp {
                return Ok((p.to_string(), v.to_string()));
            }
        }
    }
    let (package, version) = resolve_package()?;
    if let Some(stamp) = stamp {
        if fs::create_dir_all(lab_dir).is_ok() {
            // Written whole then renamed, so a concurrent reader never sees half a line.
            let tmp = lab_dir.join(format!(".kernel-resolved.{}", std::process::id()));
            if fs::write(&tmp, format!("{stamp} {package} {version}\n")).is_ok()
                && fs::rename(&tmp, &memo).is_err()
            {
                let _ = fs::remove_file(&tmp);
            }
        }
    }
    Ok((package, version))
}

/// The cached L1 kernel for the current package version, fetching and unpacking it first if needed.
pub fn ensure(lab_dir: &Path, progress: &Progress) -> Result<L1Kernel, LabError> {
    let (package, version) = match resolve_package_memo(lab_dir) {
        Ok(pv) => pv,
        Err(err) => {
            // Without apt lists a previously fetched kernel still serves.
            return match newest_cached(lab_dir) {
                Some(k) => {
                    progress.note(&format!("{err}; using the cached {} {}", k.package, k.version));
                    Ok(k)
                }
                None => Err(err),
            };
        }
    };
    let dir = lab_dir.join(entry_name(&package, &version));
    if dir.join("release").is_file() {
        return L1Kernel::in_dir(&dir, &package, &version);
    }
    fs::create_dir_all(lab_dir).map_err(|e| LabError::io("create", lab_dir, e))?;
    let _lock = CacheLock::acquire(&lab_dir.join("kernel.lock"))?;
    if dir.join("release").is_file() {
        return L1Kernel::in_dir(&dir, &package, &version);
    }
    let tmp = lab_dir.join(format!("{}.tmp", entry_name(&package, &version)));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| LabError::io("remove the leftover", &tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| LabError::io("create", &tmp, e))?;
    let result = fetch_into(&tmp, &package, &version, progress).and_then(|()| {
        fs::rename(tmp.join("entry"), &dir).map_err(|e| LabError::io("rename into place", &dir, e))
    });
    // The temporary directory goes whether the fetch worked or not.
    let _ = fs::remove_dir_all(&tmp);
    result?;
    L1Kernel::in_dir(&dir, &package, &version)
}

fn fetch_into(tmp: &Path, package: &str, version: &str, progress: &Progress) -> Result<(), LabError> {
    let apt_get = require("apt-get", "apt")?;
    let dpkg_deb = require("dpkg-deb", "dpkg")?;
    let step = progress.step(format!("downloading {package} {version}"));
    let spec = format!("{package}={version}");
    let out = std::process::Command::new(&apt_get)
        .args(["download", &spec])
        .current_dir(tmp)
        .output()
        .map_err(|e| LabError::CommandFailed {
            command: format!("apt-get download {spec}"),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::PackageNotFound {
            package: spec,
            detail: format!(
                ": apt-get download said: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let deb = fs::read_dir(tmp)
        .map_err(|e| LabError::io("list", tmp, e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| LabError::CommandFailed {
            command: format!("apt-get download {spec}"),
            detail: format!("no .deb appeared in {}", tmp.display()),
        })?;
    step.done("");

    let step = progress.step(format!("unpacking {}", deb.display()));
    let x = tmp.join("x");
    run_capture(&dpkg_deb, &[OsStr::new("-x"), deb.as_os_str(), x.as_os_str()])?;
    let boot = x.join("boot");
    let find = |prefix: &str| -> Result<PathBuf, LabError> {
        fs::read_dir(&boot)
            .map_err(|e| LabError::io("list", &boot, e))?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .ok_or_else(|| LabError::CommandFailed {
                command: format!("dpkg-deb -x {}", deb.display()),
                detail: format!("the package has no /boot/{prefix}*"),
            })
    };
    let vmlinuz = find("vmlinuz-")?;
    let config = find("config-")?;
    let release = vmlinuz
        .file_name()
        .map(|n| n.to_string_lossy().trim_start_matches("vmlinuz-").to_string())
        .unwrap_or_default();
    let entry = tmp.join("entry");
    fs::create_dir_all(&entry).map_err(|e| LabError::io("create", &entry, e))?;
    let modules = x.join("lib/modules").join(&release).join("kernel");
    for (from, to) in [
        (&vmlinuz, entry.join("vmlinuz")),
        (&config, entry.join("config")),
        (&modules, entry.join("modules")),
    ] {
        fs::rename(from, &to).map_err(|e| LabError::io("move into the cache entry", from, e))?;
    }
    // `release` is written last: its presence marks a complete entry.
    let release_path = entry.join("release");
    fs::write(&release_path, format!("{release}\n")).map_err(|e| LabError::io("write", &release_path, e))?;
    step.done(&format!("kernel {release}"));
    Ok(())
}
