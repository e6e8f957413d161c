//! [`SandboxSpec`]: the flags both modes share, each parsed and validated once.

use crate::{IdRange, SpecError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The image used when `--image` is not given (busybox plus the guest program).
pub const DEFAULT_IMAGE: &str = "default";

/// Resource limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// `--memory`: hard memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// `--cpus`: CPU quota in CPUs (0.5 = half of one CPU's time).
    pub cpus: Option<f64>,
    /// `--pids`: most processes (and threads) at once.
    pub pids: Option<u64>,
}

impl Resources {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.memory_bytes.is_some() || self.cpus.is_some() || self.pids.is_some()
    }

    /// Parses `--cpus`.
    pub fn parse_cpus(input: &str) -> Result<f64, SpecError> {
        match input.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 && v <= 1024.0 => Ok(v),
            _ => Err(SpecError::Cpus {
                input: input.to_string(),
            }),
        }
    }

    /// Parses `--pids`.
    pub fn parse_pids(input: &str) -> Result<u64, SpecError> {
        match input.trim().parse::<u64>() {
            Ok(v) if v >= 2 => Ok(v),
            _ => Err(SpecError::Pids {
                input: input.to_string(),
            }),
        }
    }
}

/// `--net`: what network the sandbox gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Loopback only.
    #[default]
    None,
    /// Loopback plus a point-to-point link to the host on a private /30.
    Host,
}

impl FromStr for NetMode {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(NetMode::None),
            "host" => Ok(NetMode::Host),
            _ => Err(SpecError::Net { input: s.to_string() }),
        }
    }
}

impl fmt::Display for NetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetMode::None => "none",
            NetMode::Host => "host",
        })
    }
}

/// `--volume HOST:PATH[:ro]`: a host directory made visible inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// The host directory (absolute after [`SandboxSpec::validate`]).
    pub host: PathBuf,
    /// Where it appears inside the sandbox (absolute, no `..`).
    pub guest: String,
    pub read_only: bool,
}

impl FromStr for Volume {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| SpecError::Volume {
            input: s.to_string(),
            why: why.to_string(),
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (host, guest, read_only) = match parts.as_slice() {
            [host, guest] => (*host, *guest, false),
            [host, guest, "ro"] => (*host, *guest, true),
            [host, guest, "rw"] => (*host, *guest, false),
            [_, _, opt] => return Err(bad(&format!("unknown option {opt:?} (known: ro, rw)"))),
            _ => return Err(bad("expected two or three `:`-separated parts")),
        };
        if host.is_empty() {
            return Err(bad("the host directory is empty"));
        }
        if !guest.starts_with('/') {
            return Err(bad("the path inside the sandbox must be absolute"));
        }
        if guest.split('/').any(|c| c == "..") {
            return Err(bad("the path inside the sandbox must not contain `..`"));
        }
        if guest.trim_end_matches('/').is_empty() {
            return Err(bad("a volume cannot replace the sandbox's root directory"));
        }
        let first = guest.split('/').find(|c| !c.is_empty() && *c != ".");
        if let Some(kernel @ ("proc" | "sys" | "dev")) = first {
            return Err(bad(&format!(
                "/{kernel} is the kernel's view of the sandbox (and its device allowlist); \
                 mount the volume somewhere else, e.g. /mnt/{kernel}-data"
            )));
        }
        Ok(Volume {
            host: PathBuf::from(host),
            guest: guest.to_string(),
            read_only,
        })
    }
}

/// Everything `sandbox run` was asked to do, in either mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Image name in the store; [`DEFAULT_IMAGE`] when not given.
    pub image: String,
    /// argv of the command; empty runs the guest program's `info`.
    pub command: Vec<String>,
    pub resources: Resources,
    pub net: NetMode,
    pub volumes: Vec<Volume>,
    pub hostname: Option<String>,
    /// Extra environment, after the image's own.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// `(uid, gid)` the command runs as.
    pub user: Option<(u32, u32)>,
    /// `--timings`: print the time of each phase.
    pub timings: bool,
    /// `--trace`: print each step as it happens (for debugging the launcher).
    pub trace: bool,
    /// `-t`: the command gets a pseudo-terminal of its own (its controlling terminal), which the
    /// launcher relays to its own, in raw mode.
    #[serde(default)]
    pub tty: bool,
    /// `-i`: the command's stdin is the launcher's (else `/dev/null`).
    #[serde(default)]
    pub interactive: bool,
    /// `--name`: the sandbox's id (for `sandbox exec`, `sandbox ps`), instead of a random one.
    #[serde(default)]
    pub name: Option<String>,
    /// `--userns[=BASE]` (container mode, root launcher): a user namespace mapping the
    /// container's ids 0..65536 onto these host ids, so its root is no host root.
    #[serde(default)]
    pub userns: Option<IdRange>,
}

impl Default for SandboxSpec {
    fn default() -> Self {
        SandboxSpec {
            image: DEFAULT_IMAGE.to_string(),
            command: Vec::new(),
            resources: Resources::default(),
            net: NetMode::None,
            volumes: Vec::new(),
            hostname: None,
            env: Vec::new(),
            workdir: None,
            user: None,
            timings: false,
            trace: false,
            tty: false,
            interactive: false,
            name: None,
            userns: None,
        }
    }
}

impl SandboxSpec {
    /// Parses `--env KEY=VALUE`.
    pub fn parse_env(input: &str) -> Result<(String, String), SpecError> {
        match input.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(SpecError::Env {
                input: input.to_string(),
            }),
        }
    }

    /// Parses `--user UID[:GID]` (GID defaults to UID).
    pub fn parse_user(input: &str) -> Result<(u32, u32), SpecError> {
        let bad = || SpecError::User {
            input: input.to_string(),
        };
        let (u, g) = match input.split_once(':') {
            Some((u, g)) => (u, g),
            None => (input, input),
        };
        Ok((u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?))
    }

    /// Parses `--hostname` (a DNS label set: letters, digits, `-` and `.`, at most 64 bytes).
    pub fn parse_hostname(input: &str) -> Result<String, SpecError> {
        let bad = |why: &str| SpecError::Hostname {
            input: input.to_string(),
            why: why.to_string(),
        };
        if input.is_empty() || input.len() > 64 {
            return Err(bad("it must be 1 to 64 characters long"));
        }
        if !input
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(bad("use only letters, digits, `-` and `.`"));
        }
        if input.starts_with('-') || input.starts_with('.') {
            return Err(bad("it must start with a letter or digit"));
        }
        Ok(input.to_string())
    }

    /// Parses `--workdir`.
    pub fn parse_workdir(input: &str) -> Result<String, SpecError> {
        if input.starts_with('/') {
            Ok(input.to_string())
        } else {
            Err(SpecError::Workdir {
                input: input.to_string(),
            })
        }
    }

    /// Checks what needs the host: each volume's source exists and is a directory; sources are
    /// made absolute (canonical) so the launcher never resolves them relative to anything else.
    pub fn validate(&mut self) -> Result<(), SpecError> {
        if self.command.first().is_some_and(|c| c.is_empty()) {
            return Err(SpecError::EmptyCommand);
        }
        for volume in &mut self.volumes {
            let shown = volume.host.display().to_string();
            match volume.host.canonicalize() {
                Ok(abs) if abs.is_dir() => volume.host = abs,
                Ok(_) => {
                    return Err(SpecError::Volume {
                        input: shown,
                        why: "the host path is not a directory".to_string(),
                    })
                }
                Err(_) => return Err(SpecError::VolumeSourceMissing { path: shown }),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_and_refuse() {
        let v: Volume = "/srv/data:/data:ro".parse().unwrap();
        assert_eq!(v.host, PathBuf::from("/srv/data"));
        assert_eq!(v.guest, "/data");
        assert!(v.read_only);
        assert!(!"/a:/b".parse::<Volume>().unwrap().read_only);
        for bad in [
            "/a",
            "/a:b",
            "/a:/b:rx",
            ":/b",
            "/a:/../b",
            "/a:/",
            "/a:/b:ro:x",
            "/a:/proc",
            "/a://sys/kernel",
            "/a:/./dev/",
        ] {
            let err = bad.parse::<Volume>().unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn validate_names_a_missing_volume_source_and_canonicalizes() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = SandboxSpec::default();
        let missing = dir.path().join("nope");
        spec.volumes
            .push(format!("{}:/x", missing.display()).parse().unwrap());
        let err = spec.validate().unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");

        let mut spec = SandboxSpec::default();
        let rel = format!("{}/./:/x", dir.path().display());
        spec.volumes.push(rel.parse().unwrap());
        spec.validate().unwrap();
        assert_eq!(spec.volumes[0].host, dir.path().canonicalize().unwrap());
    }

    #[test]
    fn small_flags_parse_and_refuse() {
        assert_eq!(SandboxSpec::parse_user("1000").unwrap(), (1000, 1000));
        assert_eq!(SandboxSpec::parse_user("1:2").unwrap(), (1, 2));
        assert!(SandboxSpec::parse_user("root").is_err());
        assert_eq!(
            SandboxSpec::parse_env("A=b=c").unwrap(),
            ("A".to_string(), "b=c".to_string())
        );
        assert!(SandboxSpec::parse_env("=x").is_err());
        assert!(SandboxSpec::parse_env("novalue").is_err());
        assert_eq!(Resources::parse_cpus("0.5").unwrap(), 0.5);
        assert!(Resources::parse_cpus("0").is_err());
        assert!(Resources::parse_cpus("lots").is_err());
        assert_eq!(Resources::parse_pids("64").unwrap(), 64);
        assert!(Resources::parse_pids("0").is_err());
        assert!(Resources::parse_pids("1")
            .unwrap_err()
            .to_string()
            .contains("init and the command"));
        assert_eq!("host".parse::<NetMode>().unwrap(), NetMode::Host);
        assert!("bridge".parse::<NetMode>().is_err());
        assert!(SandboxSpec::parse_hostname("box-1").is_ok());
        assert!(SandboxSpec::parse_hostname("bad_name").is_err());
        assert!(SandboxSpec::parse_workdir("rel").is_err());
    }
}
