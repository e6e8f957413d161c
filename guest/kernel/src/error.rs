//! The errors of the kernel builder: each names what was wrong and how to fix it.

use std::path::PathBuf;
use thiserror::Error;

/// Why a kernel could not be configured, built, found or recognised.
#[derive(Debug, Error)]
pub enum KernelError {
    /// The kernel source tarball is not where it should be.
    #[error(
        "linux-source-6.1 is not installed ({} is missing): run `apt-get install linux-source-6.1 flex bison bc libelf-dev`",
        .0.display()
    )]
    SourceMissing(PathBuf),
    /// A program or header the kernel build needs is missing.
    #[error("{what} is not installed: run `apt-get install {package}`")]
    ToolMissing { what: String, package: String },
    /// A file or directory operation failed.
    /// (The cause is part of the message, not a separate `source()`, so it is printed once.)
    #[error("{action} {}: {err}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    /// Unpacking the source tarball failed.
    #[error("cannot unpack {}: {detail}", tarball.display())]
    Unpack { tarball: PathBuf, detail: String },
    /// A `make` step failed; the message carries the end of its log.
    #[error("`make {step}` failed (exit status {status}); the last lines of {}:\n{tail}", log.display())]
    Make {
        step: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    /// Symbols of the fragment did not survive `make olddefconfig` (unknown, or a dependency is off).
    #[error(
        "the kernel config dropped these fragment symbols: {}; each needs its dependencies enabled in the fragment (see `make menuconfig` → search) or the name is wrong; config at {}",
        .symbols.join(", "), .config.display()
    )]
    SymbolsDropped { symbols: Vec<String>, config: PathBuf },
    /// A fragment line is neither a comment nor `CONFIG_NAME=value`.
    #[error("fragment line {line:?} is not of the form CONFIG_NAME=value")]
    BadFragmentLine { line: String },
    /// A cache entry's `inputs.json` cannot be parsed.
    #[error(
        "{}: not a kernel cache record ({detail}): remove its directory, and run `sandbox kernel build` where the source is installed",
        .path.display()
    )]
    BadInputs { path: PathBuf, detail: String },
    /// A file passed as a kernel is not one.
    #[error("{}: {reason}", path.display())]
    NotAKernel { path: PathBuf, reason: String },
}

impl KernelError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        KernelError::Io {
            action,
            path: path.into(),
            err,
        }
    }
}
