//! [`BenchError`]: why a benchmark step could not run, each naming the remedy.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A program the bench runs could not be started.
    #[error("cannot start {program}: {source} (is it installed and on PATH?)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A sandbox or peer ran but did not do what the scenario needs.
    #[error("{what} failed: {detail}")]
    Run { what: String, detail: String },
    /// A file or directory the bench reads or writes.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The output directory holds something that is not a report directory.
    #[error("the output directory {} exists and is not empty: pick another --out or remove it", .0.display())]
    OutDirNotEmpty(PathBuf),
    /// A workload printed no JSON result line.
    #[error("{what} printed no JSON result (stdout: {stdout:?})")]
    NoResult { what: String, stdout: String },
    /// An image-store step (the peers' bundles and the copy-up image come from the store).
    #[error(transparent)]
    Image(#[from] sandbox_image::ImageError),
    /// A root disk for the QEMU peer.
    #[error(transparent)]
    Disk(#[from] sandbox_disk::DiskError),
    /// Drawing a chart.
    #[error("drawing chart {}: {detail}", path.display())]
    Chart { path: PathBuf, detail: String },
    /// Serialising the report.
    #[error("writing report.json: {0}")]
    Json(#[from] serde_json::Error),
}

impl BenchError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn run(what: impl Into<String>, detail: impl Into<String>) -> Self {
        BenchError::Run {
            what: what.into(),
            detail: detail.into(),
        }
    }
}
