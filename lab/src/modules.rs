//! Kernel modules for L1: finds each wanted module in the L1 kernel's module tree and orders it
//! after its dependencies, read from the `depends=` entry of the module's `.modinfo` section (the
//! Debian package ships no `modules.dep`; `depmod` makes it at install time).

use crate::LabError;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// A module to load in L1 and the file it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Canonical name (underscores), e.g. `kvm_amd`.
    pub name: String,
    pub path: PathBuf,
}

/// Module names use `-` and `_` interchangeably; the kernel canonicalises to `_`.
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

fn index(dir: &Path, out: &mut HashMap<String, PathBuf>) -> Result<(), LabError> {
    for entry in fs::read_dir(dir).map_err(|e| LabError::io("list", dir, e))? {
        let path = entry.map_err(|e| LabError::io("list", dir, e))?.path();
        if path.is_dir() {
            index(&path, out)?;
        } else if let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
        {
            out.insert(canonical(stem), path);
        }
    }
    Ok(())
}

/// The `depends=` list inside a module's `.modinfo` (NUL-separated `key=value` strings).
pub fn depends_of(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(pos) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &ko[pos + KEY.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(canonical)
        .collect()
}

/// `wanted` and everything they depend on, dependencies first, each once.
pub fn resolve(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<Module>, LabError> {
    let mut all = HashMap::new();
    index(modules_dir, &mut all)?;
    let mut order = Vec::new();
    for name in wanted {
        visit(&canonical(name), &all, modules_dir, &mut order, &mut Vec::new())?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    all: &HashMap<String, PathBuf>,
    dir: &Path,
    order: &mut Vec<Module>,
    stack: &mut Vec<String>,
) -> Result<(), LabError> {
    if order.iter().any(|m| m.name == name) || stack.iter().any(|s| s == name) {
        return Ok(());
    }
    let path = all.get(name).ok_or_else(|| LabError::ModuleMissing {
        module: name.to_string(),
        dir: dir.to_path_buf(),
    })?;
    let bytes = fs::read(path).map_err(|e| LabError::io("read", path, e))?;
    stack.push(name.to_string());
    for dep in depends_of(&bytes) {
        visit(&dep, all, dir, order, stack)?;
    }
    stack.pop();
    order.push(Module {
        name: name.to_string(),
        path: path.clone(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_depends_from_modinfo() {
        let ko = b"\x7fELF....\0license=GPL\0depends=kvm,irq-bypass\0name=kvm_amd\0";
        assert_eq!(depends_of(ko), vec!["kvm", "irq_bypass"]);
        assert!(depends_of(b"\0depends=\0name=x\0").is_empty());
        assert!(depends_of(b"nothing here").is_empty());
    }

    #[test]
    fn orders_dependencies_first_and_names_missing_modules() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/kvm-amd.ko"), b"\0depends=kvm\0").unwrap();
        fs::write(dir.path().join("a/kvm.ko"), b"\0depends=irqbypass\0").unwrap();
        fs::write(dir.path().join("irqbypass.ko"), b"\0depends=\0").unwrap();
        fs::write(dir.path().join("broken.ko"), b"\0depends=absent\0").unwrap();
        let names: Vec<String> = resolve(dir.path(), &["kvm-amd", "kvm"])
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, vec!["irqbypass", "kvm", "kvm_amd"]);
        let err = resolve(dir.path(), &["broken"]).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
