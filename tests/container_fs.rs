//! The root filesystem: writes land in the container's upper dir, the image layers are never
//! changed, two containers from one image do not see each other's files, and volumes bind-mount
//! host directories (read-only when asked).

mod container_support;

use container_support::{eventually, Home};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == name {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(files_named(&path, name));
        }
    }
    found
}

#[test]
fn writes_land_in_the_upper_dir_and_the_image_is_unchanged() {
    let home = Home::new();
    let bg = home.spawn(
        &[],
        &[
            "sh",
            "-c",
            "echo payload > /written-here; echo also > /usr/bin/sandbox-guest-copy; sleep 30",
        ],
    );
    let upper = home.run_dir().join(&bg.id).join("upper");
    assert!(
        eventually(Duration::from_secs(20), || upper.join("written-here").is_file()),
        "the write never reached {}",
        upper.display()
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("written-here")).unwrap(),
        "payload\n"
    );
    assert!(eventually(Duration::from_secs(10), || upper
        .join("usr/bin/sandbox-guest-copy")
        .is_file()));
    let layers = home.path().join("layers");
    assert!(
        layers.is_dir(),
        "the image store keeps layers in {}",
        layers.display()
    );
    assert!(
        files_named(&layers, "written-here").is_empty(),
        "a layer was written to"
    );
    assert!(
        files_named(&layers, "sandbox-guest-copy").is_empty(),
        "a layer was written to"
    );
    let id = bg.id.clone();
    drop(bg); // kills the launcher; the container dies with it (PDEATHSIG)
    let gc = home.command(&["gc"]).output().unwrap();
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    assert!(files_named(&layers, "written-here").is_empty());
    home.assert_no_leaks(&id);
}

#[test]
fn two_containers_from_one_image_do_not_see_each_others_files() {
    let home = Home::new();
    let a = home.spawn(&[], &["sh", "-c", "echo a > /only-in-a; sleep 30"]);
    let upper_a = home.run_dir().join(&a.id).join("upper");
    assert!(eventually(Duration::from_secs(20), || upper_a
        .join("only-in-a")
        .is_file()));
    let b = home.run(
        &[],
        &[
            "sh",
            "-c",
            "test ! -e /only-in-a && echo b > /only-in-b && echo isolated",
        ],
    );
    b.expect(0);
    assert_eq!(b.stdout, "isolated\n");
    assert!(
        !upper_a.join("only-in-b").exists(),
        "b's write reached a's upper dir"
    );
    let id_a = a.id.clone();
    drop(a);
    let gc = home.command(&["gc"]).output().unwrap();
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    home.assert_no_leaks(&id_a);
    home.assert_no_leaks(b.id());
}

#[test]
fn volumes_bind_host_directories_read_write_and_read_only() {
    let home = Home::new();
    let rw = tempfile::tempdir().unwrap();
    let ro = tempfile::tempdir().unwrap();
    std::fs::write(ro.path().join("given"), "from the host\n").unwrap();
    let rw_arg = format!("{}:/data", rw.path().display());
    let ro_arg = format!("{}:/config:ro", ro.path().display());
    let run = home.run(
        &["--volume", &rw_arg, "--volume", &ro_arg],
        &[
            "sh",
            "-c",
            "echo out > /data/made-inside && cat /config/given && \
             (echo no > /config/x) 2>/dev/null || echo read-only",
        ],
    );
    run.expect(0);
    assert_eq!(run.stdout, "from the host\nread-only\n");
    assert_eq!(
        std::fs::read_to_string(rw.path().join("made-inside")).unwrap(),
        "out\n"
    );
    assert!(!ro.path().join("x").exists());
    home.assert_no_leaks(run.id());
}
