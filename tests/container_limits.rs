//! `--memory`, `--pids`, `--cpus`: the cgroup limits hold, an OOM kill is reported as such, and
//! the cgroup is gone afterwards.

mod container_support;

use container_support::Home;

#[test]
fn memory_over_the_limit_is_oom_killed_and_reported() {
    let home = Home::new();
    let run = home.run(&["--memory", "32M"], &["sandbox-guest", "mem", "--mib", "128"]);
    run.expect(137);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("OOM"))
        .unwrap_or_else(|| panic!("no OOM message: {}", run.stderr));
    assert!(line.contains("killed by the OOM killer"), "{line}");
    assert!(line.contains("32 MiB") && line.contains("--memory"), "{line}");
    home.assert_no_leaks(run.id());
}

#[test]
fn memory_under_the_limit_runs_and_reports_its_peak() {
    let home = Home::new();
    let outcome = home.path().join("outcome.json");
    let outcome_arg = outcome.to_string_lossy().into_owned();
    let run = home.run(
        &["--memory", "256M", "--outcome", &outcome_arg],
        &["sandbox-guest", "mem", "--mib", "32"],
    );
    run.expect(0);
    let outcome: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&outcome).unwrap()).unwrap();
    assert_eq!(outcome["oom_killed"], false);
    assert_eq!(outcome["resources"]["memory_limit_bytes"], 256u64 << 20);
    let peak = outcome["resources"]["memory_peak_bytes"]
        .as_u64()
        .expect("a peak figure");
    eprintln!("memory peak: {peak} bytes");
    assert!(
        peak >= 32 << 20,
        "the peak must include the 32 MiB written: {peak}"
    );
    home.assert_no_leaks(run.id());
}

#[test]
fn a_fork_loop_stops_at_the_pids_limit() {
    let home = Home::new();
    // 40 background sleeps against a limit of 16 (init and sh count too). busybox sh gives up
    // at the first refused fork, so the "started" lines count the forks that succeeded.
    let run = home.run(
        &["--pids", "16"],
        &[
            "sh",
            "-c",
            "for i in $(seq 40); do sleep 30 & echo started; done; echo all-forked",
        ],
    );
    assert_ne!(run.code(), 0, "the loop must be stopped: {}", run.stdout);
    assert!(
        run.stderr.contains("can't fork"),
        "the loop was never refused: {}",
        run.stderr
    );
    assert!(!run.stdout.contains("all-forked"));
    let started = run.stdout.lines().filter(|l| *l == "started").count();
    eprintln!("{started} sleeps started under --pids 16");
    assert!(
        (1..=14).contains(&started),
        "{started} forks succeeded under --pids 16"
    );
    home.assert_no_leaks(run.id());
}

#[test]
fn a_cpu_quota_shows_throttling_in_the_cgroup_stats() {
    let home = Home::new();
    let outcome = home.path().join("outcome.json");
    let outcome_arg = outcome.to_string_lossy().into_owned();
    let run = home.run(
        &["--cpus", "0.2", "--outcome", &outcome_arg],
        &["sandbox-guest", "cpu", "--seconds", "1"],
    );
    run.expect(0);
    let outcome: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&outcome).unwrap()).unwrap();
    let throttled = outcome["resources"]["cpu_nr_throttled"]
        .as_u64()
        .expect("a throttling figure");
    eprintln!(
        "throttled {throttled} periods, {} µs",
        outcome["resources"]["cpu_throttled_usec"]
    );
    assert!(
        throttled > 0,
        "a busy loop under --cpus 0.2 must be throttled: {outcome}"
    );
    home.assert_no_leaks(run.id());
}
