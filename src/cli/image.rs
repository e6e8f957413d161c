//! `sandbox image`: import, list, inspect and remove images in the store (a thin layer over
//! `sandbox_image::Store`).

use anyhow::Context;
use sandbox_image::{human, ImageInfo, ImportOptions, Store, DEFAULT_IMAGE};
use std::io::Write;
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  sandbox image import ./rootfs --name mybox          a directory holding a root file system
  sandbox image import alpine-minirootfs.tar.gz       a rootfs tarball (plain or gzip)
  docker save alpine:3.19 -o alpine.tar && sandbox image import alpine.tar
  skopeo copy docker://debian:12 oci:debian12 && sandbox image import debian12 --name debian:12
  sandbox image ls
  sandbox image inspect default
  sandbox image rm mybox";

/// Manage the image store: import, list, inspect and remove images.
#[derive(Debug, clap::Subcommand)]
#[command(after_long_help = STORE_HELP)]
pub enum Command {
    /// Import an image from a rootfs directory or tarball, an OCI image layout, or `docker save`.
    #[command(
        long_about = "Import an image. PATH may be:\n  \
            - a directory holding a root file system (one layer; owners, modes and links as on disk),\n  \
            - a tarball of one (.tar, .tar.gz or .tgz; gzip is detected from the content),\n  \
            - an OCI image layout directory or archive (oci-layout + index.json + blobs/; for a \
              multi-platform index the linux/amd64 image is taken),\n  \
            - a `docker save` tarball (manifest.json + layers).\n\
            Every blob is checked against its digest and size, and every tar against truncation, \
            before the store changes: a damaged input is refused and the store is left as it was. \
            Only regular files are read (a FIFO, device or link where a file belongs is refused), \
            and device nodes and FIFOs inside layers need --allow-devices. \
            Importing a name that exists replaces it. Prints the name and the manifest digest.",
        after_long_help = EXAMPLES
    )]
    Import(ImportArgs),
    /// List the images in the store: name, digest, layers, size, creation time.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show one image as JSON: manifest digest, layers (digests, sizes, where unpacked), config.
    Inspect(InspectArgs),
    /// Remove an image; blobs and unpacked layers that no other image uses are deleted too,
    /// with their copies made for `sandbox run --userns`.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A rootfs directory or tarball, an OCI image layout (directory or tar), or a `docker save` tar.
    pub path: PathBuf,
    /// Name for the image (letters, digits, `. _ - : / @ +`). Default: the tag or reference the
    /// input carries, else the file or directory name without .tar/.tar.gz/.tgz.
    #[arg(long, short)]
    pub name: Option<String>,
    /// Accept device nodes (character and block devices) and FIFOs in the image's layers.
    ///
    /// Off by default: a device node in an image is a door to the host device with that number
    /// (`/dev/sda`, `/dev/mem`...) for whatever runs the image, and for anyone who can reach the
    /// unpacked layer; an image that brings its own is refused, naming the entry. Pass this only
    /// for an image you trust that needs them (a rootfs with a populated /dev). Whiteouts
    /// (character devices 0/0, which open nothing) are always accepted; sandboxes get their
    /// /dev from the runtime, not from the image.
    #[arg(long)]
    pub allow_devices: bool,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Print the list as JSON (name, digest, size_bytes, layers, created) for machines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The image's name, as `sandbox image ls` shows it.
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The image's name, as `sandbox image ls` shows it.
    pub name: String,
}

/// `sandbox image --help`: what an image is here, where it is stored, examples.
const STORE_HELP: &str = "\
An image is a root file system made of layers plus a little run configuration (environment, \
command, working directory, user), as in Docker or OCI. Images live in an OCI image layout under \
$SANDBOX_HOME/images (default ~/.local/share/sandbox/images); each layer is unpacked once under \
$SANDBOX_HOME/layers/ and shared by every sandbox made from it. When a sandbox starts, the current \
sandbox-guest program is added on top of the image at /usr/bin/sandbox-guest, so it is on PATH in \
every image without re-importing anything. For `sandbox run --userns` each layer is also copied \
once per host id range with its owners shifted into the range, under $SANDBOX_HOME/layers/userns/, \
and reused; the copies go with their layer when no image uses it any more (`sandbox image rm`). \
The store is private to the user who owns it: its \
directories are mode 0700 (layers hold the images' setuid programs and device nodes), and a store \
owned by another user is refused.

The image named \"default\" is built on first use from the host's busybox-static \
(`apt-get install busybox-static`).

Examples:
  sandbox image import ./rootfs --name mybox          a directory holding a root file system
  sandbox image import alpine-minirootfs.tar.gz       a rootfs tarball (plain or gzip)
  docker save alpine:3.19 -o alpine.tar && sandbox image import alpine.tar
  skopeo copy docker://debian:12 oci:debian12 && sandbox image import debian12 --name debian:12
  sandbox image ls
  sandbox image inspect default
  sandbox image rm mybox";

pub fn run(cmd: Command) -> anyhow::Result<i32> {
    let store = Store::open_default().context("cannot open the image store (set SANDBOX_HOME to move it)")?;
    for dir in store.tightened() {
        eprintln!(
            "note: {} was open to other users; made it private (mode 0700)",
            dir.display()
        );
    }
    match cmd {
        Command::Import(args) => {
            let options = ImportOptions {
                name: args.name,
                allow_devices: args.allow_devices,
            };
            let info = store.import_with(&args.path, &options)?;
            print(&format!("{}\t{}", info.name, info.digest))?;
        }
        Command::Ls(args) => {
            let images = store.list()?;
            let text = if args.json {
                serde_json::to_string_pretty(&images)?
            } else {
                table(&images)
            };
            print(&text)?;
        }
        Command::Inspect(args) => {
            if args.name == DEFAULT_IMAGE {
                store.ensure_default()?;
            }
            let details = store.inspect(&args.name)?;
            print(&serde_json::to_string_pretty(&details)?)?;
        }
        Command::Rm(args) => {
            store.remove(&args.name)?;
            print(&format!("removed {}", args.name))?;
        }
    }
    Ok(0)
}

/// Writes `text` and a newline to stdout; a reader that stopped early is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The `ls` table: NAME, DIGEST (12 hex digits), LAYERS, SIZE, CREATED.
fn table(images: &[ImageInfo]) -> String {
    let rows: Vec<[String; 5]> = images
        .iter()
        .map(|i| {
            let hex = i.digest.strip_prefix("sha256:").unwrap_or(&i.digest);
            [
                i.name.clone(),
                hex.chars().take(12).collect(),
                i.layers.to_string(),
                human(i.size_bytes),
                i.created.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["NAME", "DIGEST", "LAYERS", "SIZE", "CREATED"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = Vec::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push(line.join("  ").trim_end().to_string());
    }
    if rows.is_empty() {
        out.push(format!(
            "(no images yet: `sandbox image import PATH`; \"{DEFAULT_IMAGE}\" is built on first use)"
        ));
    }
    out.join("\n")
}
