//! The config fragment (`guest/kernel/fragment.config`, compiled in): parsing it, and checking
//! that a finished `.config` kept every symbol it asks for.

use crate::KernelError;
use std::path::Path;

/// The fragment's text, the single source of truth for the symbols the guest needs.
pub const FRAGMENT: &str = include_str!("../fragment.config");

/// Parses fragment text into `(CONFIG_NAME, value)` pairs, skipping blank lines and comments.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, KernelError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Result<(String, String), KernelError> {
    let bad = || KernelError::BadFragmentLine {
        line: line.to_string(),
    };
    let (name, value) = line.split_once('=').ok_or_else(bad)?;
    let valid_name = name.starts_with("CONFIG_")
        && name.len() > "CONFIG_".len()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !valid_name || value.is_empty() {
        return Err(bad());
    }
    Ok((name.to_string(), value.to_string()))
}

/// The symbols of the compiled-in fragment.
pub fn fragment_symbols() -> Vec<(String, String)> {
    // The fragment is compiled in and checked by this crate's tests, so parsing cannot fail
    // at run time; an empty list would be caught by the config verification tests.
    parse(FRAGMENT).unwrap_or_default()
}

/// Returns the names of the `wanted` symbols whose value in `config` differs from the fragment.
pub fn dropped_symbols(config: &str, wanted: &[(String, String)]) -> Vec<String> {
    let mut values = std::collections::HashMap::new();
    for line in config.lines() {
        if let Some((name, value)) = line.split_once('=') {
            values.insert(name, value);
        } else if let Some(name) = line
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(" is not set"))
        {
            values.insert(name, "n");
        }
    }
    wanted
        .iter()
        .filter(|(name, value)| {
            let have = values.get(name.as_str()).copied().unwrap_or("n");
            have != value.as_str()
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Reads `config_path` and fails naming every `wanted` symbol that did not make it.
pub fn verify(config_path: &Path, wanted: &[(String, String)]) -> Result<(), KernelError> {
    let text = std::fs::read_to_string(config_path)
        .map_err(|e| KernelError::io("cannot read kernel config", config_path, e))?;
    let dropped = dropped_symbols(&text, wanted);
    if dropped.is_empty() {
        Ok(())
    } else {
        Err(KernelError::SymbolsDropped {
            symbols: dropped,
            config: config_path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_fragment_parses_and_holds_the_core_symbols() {
        let symbols = parse(FRAGMENT).unwrap();
        for name in [
            "CONFIG_64BIT",
            "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
            "CONFIG_EXT4_FS",
            "CONFIG_PVH",
        ] {
            assert!(
                symbols.iter().any(|(n, v)| n == name && v == "y"),
                "{name} missing"
            );
        }
    }

    #[test]
    fn malformed_lines_are_named() {
        let err = parse("CONFIG_OK=y\nVIRTIO=y\n").unwrap_err();
        assert!(err.to_string().contains("\"VIRTIO=y\""), "{err}");
    }

    #[test]
    fn dropped_symbols_are_those_missing_or_not_set() {
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n";
        let wanted: Vec<_> = ["A", "B", "C", "D"]
            .iter()
            .map(|s| (format!("CONFIG_{s}"), "y".to_string()))
            .collect();
        assert_eq!(
            dropped_symbols(config, &wanted),
            ["CONFIG_B", "CONFIG_C", "CONFIG_D"]
        );
    }
}
