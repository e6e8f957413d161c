//! `sandbox kernel`: build, configure or locate the guest kernel (Debian's linux-source-6.1 plus
//! the fragment in guest/kernel/fragment.config, cached under $SANDBOX_CACHE/kernel by content).

use anyhow::Context;
use sandbox_kernel::{KernelArtifacts, KernelOptions};
use std::time::Instant;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Build the guest kernel (bzImage and vmlinux), or find it already built.
    ///
    /// Unpacks /usr/src/linux-source-6.1.tar.xz into the cache once, applies the fragment to
    /// `make tinyconfig`, runs `make olddefconfig`, checks that every fragment symbol survived,
    /// then compiles out of tree with one job per CPU (about 7 minutes on 2 cores). Nothing is
    /// rebuilt while the source, the fragment and the builder are unchanged.
    Build {
        /// Parallel make jobs (default: the number of CPUs).
        #[arg(long, short = 'j', value_name = "N")]
        jobs: Option<usize>,
    },
    /// Produce and check the kernel .config only, and print its path.
    ///
    /// Fast once the source is unpacked (a few seconds); fails naming any fragment symbol that
    /// `make olddefconfig` dropped.
    Config,
    /// Print the paths of the built kernel, or say how to build it.
    Path,
}

pub fn run(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Build { jobs } => {
            let mut opts = KernelOptions::default();
            if let Some(jobs) = jobs {
                anyhow::ensure!(jobs > 0, "--jobs 0 is not a job count: pass 1 or more");
                opts.jobs = jobs;
            }
            let started = Instant::now();
            let kernel = sandbox_kernel::build(&opts).context("building the guest kernel")?;
            print_paths(&kernel);
            eprintln!("kernel ready in {:.1}s", started.elapsed().as_secs_f64());
            Ok(0)
        }
        Command::Config => {
            let path =
                sandbox_kernel::config(&KernelOptions::default()).context("configuring the guest kernel")?;
            println!("{}", path.display());
            Ok(0)
        }
        Command::Path => match sandbox_kernel::cached() {
            Some(kernel) => {
                print_paths(&kernel);
                Ok(0)
            }
            None => {
                eprintln!("the guest kernel is not built: run `sandbox kernel build`");
                Ok(1)
            }
        },
    }
}

fn print_paths(kernel: &KernelArtifacts) {
    println!("bzImage  {}", kernel.bzimage.display());
    println!("vmlinux  {}", kernel.vmlinux.display());
    println!("config   {}", kernel.config.display());
    println!("log      {}", kernel.build_log.display());
}
