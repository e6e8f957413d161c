//! The real `make tinyconfig` + fragment + `make olddefconfig` against Debian's linux-source-6.1
//! (unpacked once into the cache; later runs reuse it), and the check that dropped symbols are named.

use sandbox_kernel::{config, fragment_symbols, KernelError, KernelOptions};

fn options() -> KernelOptions {
    let opts = KernelOptions::default();
    assert!(
        opts.source.is_file(),
        "{} is missing: run `apt-get install linux-source-6.1 flex bison bc libelf-dev`",
        opts.source.display()
    );
    opts
}

#[test]
fn the_config_holds_every_fragment_symbol() {
    let path = config(&options()).expect("config");
    let text = std::fs::read_to_string(&path).unwrap();
    let symbols = fragment_symbols();
    assert!(
        symbols.len() >= 60,
        "the fragment lists only {} symbols",
        symbols.len()
    );
    let missing: Vec<_> = symbols
        .iter()
        .filter(|(name, value)| !text.lines().any(|l| l == format!("{name}={value}")))
        .collect();
    assert!(missing.is_empty(), "missing from {}: {missing:?}", path.display());
    // The base is tinyconfig, not a distribution config: modules stay off.
    assert!(text.contains("# CONFIG_MODULES is not set"));
}

#[test]
fn a_symbol_that_cannot_be_set_is_named() {
    let mut opts = options();
    opts.extra_fragment = vec!["CONFIG_SANDBOX_DOES_NOT_EXIST=y".to_string()];
    let key = opts.key().unwrap();
    match config(&opts) {
        Err(KernelError::SymbolsDropped { symbols, .. }) => {
            assert_eq!(symbols, ["CONFIG_SANDBOX_DOES_NOT_EXIST"]);
        }
        other => panic!("expected SymbolsDropped, got {other:?}"),
    }
    // The failed variant leaves no build directory behind.
    assert!(!opts.cache_dir.join(format!("build-{key}")).exists());
    // And the message names the symbol.
    let err = config(&opts).unwrap_err().to_string();
    assert!(err.contains("CONFIG_SANDBOX_DOES_NOT_EXIST"), "{err}");
}

#[test]
fn the_key_changes_with_the_fragment_and_not_otherwise() {
    let a = options();
    let mut b = options();
    assert_eq!(a.key().unwrap(), b.key().unwrap());
    b.extra_fragment = vec!["# only a comment".to_string()];
    assert_eq!(a.key().unwrap(), b.key().unwrap(), "a comment changed the key");
    b.extra_fragment = vec!["CONFIG_IKCONFIG=y".to_string()];
    assert_ne!(a.key().unwrap(), b.key().unwrap());
}

#[test]
fn a_malformed_extra_line_is_refused_before_anything_runs() {
    let mut opts = options();
    opts.extra_fragment = vec!["VIRTIO=y".to_string()];
    let err = config(&opts).unwrap_err();
    assert!(matches!(err, KernelError::BadFragmentLine { .. }), "{err}");
}
