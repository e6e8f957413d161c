//! The OCI runtimes: sandbox-runtime, crun, runc and gVisor's runsc, each on an OCI bundle of
//! the image's flattened root. Each runtime's own `spec` gives its bundle's config (runsc gets
//! runc's, so it runs the very bundle runc runs: `runsc spec` only where runc is missing), with
//! no terminal, the root read-only and `/bin/true` for the boot scenario; the other scenarios
//! change only what they need (the process, a volume's bind mount, a writable root copy, a
//! network namespace) and the report lists those changes.
//!
//! On hybrid cgroup hosts crun refuses to run while cgroup2 is mounted beside v1; it runs in a
//! private mount namespace with /sys/fs/cgroup/unified unmounted (`unshare -m`), as the report
//! notes. runsc runs with `--network=none` except in the net scenario, where it gets a network
//! namespace holding one end of a veth pair (the host end takes a /30 from the same allocator
//! container mode's veths use) and runs its own network stack (`--network=sandbox`) on it.

use crate::config::{Peer, Scenario};
use crate::environment::peer_program;
use crate::error::BenchError;
use crate::process::{is_ready_result, run_to_end, Finished, Held};
use crate::runner::Bench;
use sandbox_container::cgroups::Layout;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long a held container may take to say ready (gVisor under the lab's emulation: seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The process of a held container: ready on its stdout (with [`hold_env`]), then sleep.
pub const HOLD_ARGS: &[&str] = &["/bin/sh", "-c", "sandbox-guest ready && exec sleep 600"];

/// Gives a held container's workload its ready channel: its stdout.
pub fn hold_env(config: &mut Value) {
    if let Some(env) = config["process"]["env"].as_array_mut() {
        env.push("SANDBOX_READY=fd:1".into());
    }
}

/// A bundle ready to run (see [`Oci::setup`]).
#[derive(Debug, Clone)]
pub struct OciRun {
    pub peer: Peer,
    pub purpose: String,
    bundle: PathBuf,
    network: &'static str,
}

#[derive(Default)]
pub struct Oci {
    /// Each runtime's base config (its `spec`, with the common changes).
    templates: Vec<(Peer, Value)>,
    /// Bundles made so far: (runtime, purpose, directory).
    bundles: Vec<(Peer, String, PathBuf)>,
    work: Option<PathBuf>,
    crun_unshare: bool,
    counter: u64,
    net: Option<Netns>,
}

/// A container held running (the memory and exec scenarios); killed and deleted when dropped.
pub struct OciHold {
    pub held: Held,
    /// `RUNTIME exec ID`, without the process's arguments.
    exec: Vec<String>,
    kill: Vec<String>,
    delete: Vec<String>,
}

impl OciHold {
    /// `RUNTIME exec ID ARGS...` in the held container, to its end.
    pub fn exec(&self, args: &[&str]) -> Result<Finished, BenchError> {
        let what = format!(
            "{} {}",
            self.exec[..self.exec.len() - 1].join(" "),
            args.join(" ")
        );
        let mut cmd = Command::new(&self.exec[0]);
        cmd.args(&self.exec[1..]).args(args);
        run_to_end(&mut cmd, &what)?.check(&what)
    }

    /// The command line of [`OciHold::exec`], the id shown as `ID` (for the report).
    pub fn exec_argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = self.exec.clone();
        if let Some(id) = argv.last_mut() {
            *id = "ID".into();
        }
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }
}

impl Drop for OciHold {
    fn drop(&mut self) {
        let _ = quiet(&self.kill);
        let _ = self.held.terminate(Duration::from_secs(10));
        let _ = quiet(&self.delete);
    }
}

/// Runs `argv` with no output, for cleanup.
fn quiet(argv: &[String]) -> std::io::Result<std::process::ExitStatus> {
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
}

/// What a runtime is, for the report.
fn description(peer: Peer) -> &'static str {
    match peer {
        Peer::SandboxRuntime => "this project's OCI runtime (the path podman and containerd take), on an OCI bundle of the image",
        Peer::Crun => "crun on an OCI bundle of the image (namespaces on the host kernel)",
        Peer::Runc => "runc on an OCI bundle of the image (namespaces on the host kernel)",
        Peer::Runsc => "gVisor's runsc on the same bundle as runc: the workload's system calls go to gVisor's kernel in user space (the Sentry), not the host kernel",
        _ => "",
    }
}

/// `runsc`'s default platform, from `runsc flags` (ptrace in Debian 12's release 20221219).
fn runsc_platform() -> String {
    let out = Command::new(peer_program(Peer::Runsc))
        .arg("flags")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
        .unwrap_or_default();
    let mut lines = out.lines();
    while let Some(l) = lines.next() {
        if l.trim_start().starts_with("-platform ") || l.trim() == "-platform string" {
            let help = lines.next().unwrap_or_default();
            if let Some(d) = help.split("(default \"").nth(1).and_then(|r| r.split('"').next()) {
                return d.to_string();
            }
        }
    }
    "runsc's default".to_string()
}

/// The leaves of `new` that differ from `base`, as `{"a.b.c": value}` (arrays compared whole;
/// a removed key is null).
pub fn changes(base: &Value, new: &Value) -> Value {
    fn walk(base: &Value, new: &Value, path: &str, out: &mut serde_json::Map<String, Value>) {
        match (base, new) {
            (Value::Object(b), Value::Object(n)) => {
                let mut keys: Vec<&String> = b.keys().chain(n.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        b.get(k).unwrap_or(&Value::Null),
                        n.get(k).unwrap_or(&Value::Null),
                        &p,
                        out,
                    );
                }
            }
            _ if base != new => {
                out.insert(path.to_string(), new.clone());
            }
            _ => {}
        }
    }
    let mut out = serde_json::Map::new();
    walk(base, new, "", &mut out);
    Value::Object(out)
}

impl Oci {
    pub fn prepare(
        &mut self,
        bench: &mut Bench,
        peer: Peer,
        work: &Path,
        rootfs: &Path,
    ) -> Result<(), BenchError> {
        if self.templates.iter().any(|(p, _)| *p == peer) {
            return Ok(());
        }
        self.work = Some(work.to_path_buf());
        // runsc runs runc's bundle; its own `spec` only where runc is missing.
        let spec_program = if peer == Peer::Runsc && bench.env.peer_version(Peer::Runc).is_some() {
            peer_program(Peer::Runc)
        } else {
            peer_program(peer)
        };
        let dir = work.join(format!("spec-{peer}"));
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io("cannot create", &dir, e))?;
        let what = format!("{spec_program} spec");
        run_to_end(Command::new(&spec_program).arg("spec").current_dir(&dir), &what)?.check(&what)?;
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io("cannot read", &path, e))?;
        let mut config: Value = serde_json::from_str(&text)?;
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = json!(["/bin/true"]);
        config["root"]["path"] = rootfs.to_string_lossy().into_owned().into();
        config["root"]["readonly"] = true.into();
        if peer == Peer::Crun && sandbox_container::cgroups::layout() == Layout::Hybrid {
            self.crun_unshare = true;
            bench.note_once(
                "crun runs in a private mount namespace with /sys/fs/cgroup/unified unmounted \
                 (`unshare -m` + umount, inside its timed run): crun 1.8 refuses hybrid cgroup \
                 hosts otherwise"
                    .to_string(),
            );
        }
        let s = bench.subject(peer.name(), description(peer));
        s.set(
            "bundle",
            format!(
                "`{spec_program} spec`, then process.terminal false, root.path the image's flattened \
                 root ({}), root.readonly true, process.args per scenario",
                rootfs.display()
            ),
        );
        if peer == Peer::Runsc {
            s.set(
                "platform",
                format!(
                    "{} (runsc's default here; how the Sentry intercepts the workload's system calls)",
                    runsc_platform()
                ),
            );
            s.set(
                "network",
                "--network=none, except the net scenario: --network=sandbox (gVisor's own TCP/IP stack, netstack) on a veth in a network namespace",
            );
        }
        if peer == Peer::Crun && self.crun_unshare {
            s.set(
                "wrapper",
                "unshare -m sh -c 'umount /sys/fs/cgroup/unified; exec crun ...' (hybrid cgroups)",
            );
        }
        s.config("config.json (the base: boot's /bin/true)", config.clone());
        self.templates.push((peer, config));
        Ok(())
    }

    fn template(&self, peer: Peer) -> Result<&Value, BenchError> {
        self.templates
            .iter()
            .find(|(p, _)| *p == peer)
            .map(|(_, c)| c)
            .ok_or_else(|| BenchError::run(peer.name(), "its bundle was not prepared"))
    }

    /// The bundle of `peer` for `purpose`, made from its base config changed by `edit` on first
    /// use; the changes are listed in the report.
    fn bundle(
        &mut self,
        bench: &mut Bench,
        peer: Peer,
        purpose: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Result<PathBuf, BenchError> {
        if let Some((_, _, dir)) = self.bundles.iter().find(|(p, u, _)| *p == peer && u == purpose) {
            return Ok(dir.clone());
        }
        let base = self.template(peer)?.clone();
        let mut config = base.clone();
        edit(&mut config);
        let work = self
            .work
            .clone()
            .ok_or_else(|| BenchError::run(peer.name(), "no work directory"))?;
        let dir = work.join(format!("bundle-{peer}-{purpose}"));
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io("cannot create", &dir, e))?;
        let path = dir.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)
            .map_err(|e| BenchError::io("cannot write", &path, e))?;
        if purpose != "true" {
            bench.subject(peer.name(), description(peer)).config(
                &format!("config.json for {purpose}: changes from boot's"),
                changes(&base, &config),
            );
        }
        self.bundles.push((peer, purpose.to_string(), dir.clone()));
        Ok(dir)
    }

    /// The argv that runs `sub` (e.g. `["run", "--bundle", B, ID]`) with `peer`; runsc with
    /// `--network=MODE` before it.
    fn argv(&self, peer: Peer, network: &str, sub: &[String]) -> Vec<String> {
        let program = peer_program(peer);
        let mut a: Vec<String> = Vec::new();
        if peer == Peer::Crun && self.crun_unshare {
            a.extend(
                [
                    "unshare",
                    "-m",
                    "sh",
                    "-c",
                    "umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$@\"",
                    "sh",
                ]
                .map(String::from),
            );
        }
        a.push(program);
        if peer == Peer::Runsc {
            a.push(format!("--network={network}"));
        }
        a.extend(sub.iter().cloned());
        a
    }

    /// Makes `peer`'s bundle for `purpose` (its base config changed by `edit`; the process is
    /// `args` when given) and records its command line for `scenario` in the report.
    pub fn setup(
        &mut self,
        bench: &mut Bench,
        scenario: Scenario,
        peer: Peer,
        purpose: &str,
        args: Option<&[&str]>,
        edit: impl FnOnce(&mut Value),
    ) -> Result<OciRun, BenchError> {
        let args: Option<Vec<String>> = args.map(|a| a.iter().map(|s| s.to_string()).collect());
        let bundle = self.bundle(bench, peer, purpose, |c| {
            if let Some(args) = args {
                c["process"]["args"] = json!(args);
            }
            edit(c);
        })?;
        let network = match purpose {
            "net" => "sandbox",
            "net-hostinet" => "host",
            _ => "none",
        };
        let run = OciRun {
            peer,
            purpose: purpose.to_string(),
            bundle,
            network,
        };
        let argv = self.run_argv(&run, "ID");
        bench
            .subject(peer.name(), description(peer))
            .command(scenario, purpose, argv);
        Ok(run)
    }

    fn run_argv(&self, run: &OciRun, id: &str) -> Vec<String> {
        self.argv(
            run.peer,
            run.network,
            &[
                "run".into(),
                "--bundle".into(),
                run.bundle.display().to_string(),
                id.to_string(),
            ],
        )
    }

    fn next_id(&mut self) -> String {
        self.counter += 1;
        format!("sandbox-bench-{}-{}", std::process::id(), self.counter)
    }

    /// Runs `run`'s bundle to its end once in a fresh container: the harness's wall clock and
    /// output. The runtime's `run` removes the container; a failed one is deleted by force. A
    /// networked bundle's namespace first gets its address and route back (see [`Netns::configure`]).
    pub fn run(&mut self, run: &OciRun) -> Result<Finished, BenchError> {
        if run.network != "none" {
            if let Some(net) = &self.net {
                net.configure()?;
            }
        }
        let id = self.next_id();
        let argv = self.run_argv(run, &id);
        let what = format!("{} run ({})", peer_program(run.peer), run.purpose);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let f = run_to_end(&mut cmd, &what)?;
        if f.status != 0 {
            let _ = quiet(&self.argv(run.peer, run.network, &["delete".into(), "--force".into(), id]));
        }
        f.check(&what)
    }

    /// Starts `run`'s bundle (made with [`HOLD_ARGS`] and [`hold_env`]) and returns once its
    /// workload said ready on its stdout.
    pub fn hold(&mut self, run: &OciRun) -> Result<OciHold, BenchError> {
        let id = self.next_id();
        let argv = self.run_argv(run, &id);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let what = format!("{} run ({})", peer_program(run.peer), run.purpose);
        let held = Held::spawn(&mut cmd, &what, None)?;
        let mut hold = OciHold {
            held,
            exec: self.argv(run.peer, run.network, &["exec".into(), id.clone()]),
            kill: self.argv(run.peer, run.network, &["kill".into(), id.clone(), "KILL".into()]),
            delete: self.argv(run.peer, run.network, &["delete".into(), "--force".into(), id]),
        };
        hold.held.wait_ready(is_ready_result, READY_TIMEOUT)?;
        Ok(hold)
    }

    /// The gateway (host end) of runsc's network namespace, made on first use.
    pub fn net_gateway(&mut self) -> Result<Ipv4Addr, BenchError> {
        if self.net.is_none() {
            self.net = Some(Netns::create()?);
        }
        self.net
            .as_ref()
            .map(|n| n.gateway)
            .ok_or_else(|| BenchError::run("runsc net", "no network namespace"))
    }

    /// The file of the namespace [`Oci::net_gateway`] made (where `ip netns add` put it:
    /// `/run/netns` on current iproute2, `/var/run/netns` on older ones).
    pub fn net_namespace_path(&self) -> Option<String> {
        let name = &self.net.as_ref()?.name;
        ["/run/netns", "/var/run/netns"]
            .iter()
            .map(|dir| format!("{dir}/{name}"))
            .find(|p| Path::new(p).exists())
    }
}

/// A network namespace with one end of a veth pair (`eth0` inside, a /30 from the sandbox
/// address block, a default route to the host end). Removed when dropped.
struct Netns {
    name: String,
    host_if: String,
    gateway: Ipv4Addr,
    /// `eth0`'s address, `ADDRESS/PREFIX`.
    address: String,
}

fn ip(args: &[&str]) -> Result<(), BenchError> {
    let what = format!("ip {}", args.join(" "));
    let f = run_to_end(Command::new("ip").args(args), &what).map_err(|e| match e {
        BenchError::Spawn { program, source } => BenchError::run(
            what.clone(),
            format!("cannot start {program}: {source} (install iproute2: `apt-get install iproute2`)"),
        ),
        e => e,
    })?;
    f.check(&what).map(|_| ())
}

impl Netns {
    fn create() -> Result<Netns, BenchError> {
        let pid = std::process::id();
        let name = format!("sandbox-bench-{pid}");
        let host_if = format!("sbxg{}", pid % 100_000_000);
        ip(&["netns", "add", &name])?;
        let mut ns = Netns {
            name,
            host_if,
            gateway: Ipv4Addr::UNSPECIFIED,
            address: String::new(),
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns.name,
        ])?;
        let id = format!("bench-runsc-{pid}");
        let plan = sandbox_core::address::claim(&id, &ns.host_if, "eth0")
            .map_err(|e| BenchError::run("giving runsc's veth an address", e.to_string()))?;
        let gateway = plan
            .gateway
            .ok_or_else(|| BenchError::run("runsc's veth", "the address allocator gave no gateway"))?;
        ns.gateway = gateway;
        ns.address = format!("{}/{}", plan.address, plan.prefix_len);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns.name, "link", "set", "eth0", "up"])?;
        ns.configure()?;
        Ok(ns)
    }

    /// (Re)gives `eth0` its address and the default route. runsc's own network stack takes them
    /// off the interface when it starts (so that the namespace's kernel does not answer for
    /// them) and does not put them back: every run needs them anew.
    fn configure(&self) -> Result<(), BenchError> {
        ip(&["-n", &self.name, "addr", "replace", &self.address, "dev", "eth0"])?;
        ip(&[
            "-n",
            &self.name,
            "route",
            "replace",
            "default",
            "via",
            &self.gateway.to_string(),
            "dev",
            "eth0",
        ])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_list_the_leaves_that_differ() {
        let base = json!({"process": {"args": ["/bin/true"], "cwd": "/"}, "root": {"readonly": true}, "mounts": [1]});
        let new = json!({"process": {"args": ["sh"], "cwd": "/"}, "root": {"readonly": false}, "mounts": [1, 2], "x": 1});
        assert_eq!(
            changes(&base, &new),
            json!({"process.args": ["sh"], "root.readonly": false, "mounts": [1, 2], "x": 1})
        );
        assert_eq!(changes(&base, &base), json!({}));
    }
}
