//! `report.md` and the summary table printed at the end of a run.

use super::{shell_line, Report, SubjectSetup, Target};
use std::fmt::Write;

fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn target_line(t: &Target) -> String {
    let verdict = match t.met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured in this run",
    };
    let show = |v: Option<f64>| v.map_or_else(|| "—".to_string(), num);
    format!(
        "| {} | {} | {} {} | {} {} | {} |",
        t.name,
        t.description,
        show(t.measured),
        t.unit,
        show(t.limit),
        t.unit,
        verdict
    )
}

/// The whole report as Markdown.
pub fn render(report: &Report) -> String {
    let e = &report.environment;
    let mut s = String::new();
    let _ = writeln!(s, "# sandbox bench report\n");
    let _ = writeln!(s, "## Environment\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| Measured | **{}** |", e.place_description);
    let _ = writeln!(s, "| CPU | {} ({} CPUs) |", e.cpu_model, e.cpus);
    let _ = writeln!(s, "| Memory | {} MiB |", e.memory_total_mib);
    let _ = writeln!(s, "| Host kernel | {} |", e.host_kernel);
    let _ = writeln!(s, "| KVM | {} |", e.kvm_kind);
    let _ = writeln!(s, "| cgroups | {} |", e.cgroup_layout);
    let _ = writeln!(s, "| sandbox | {} |", e.sandbox_version);
    let _ = writeln!(
        s,
        "| Guest kernel | {} |",
        e.guest_kernel.as_deref().unwrap_or("not built")
    );
    for p in &e.peers {
        let _ = writeln!(
            s,
            "| {} | {} |",
            p.peer,
            p.version.as_deref().or(p.install_hint.as_deref()).unwrap_or("—")
        );
    }
    let c = &report.config;
    let _ = writeln!(
        s,
        "| Runs | {} measured after {} warm-up per series{} |",
        c.runs,
        c.warmup,
        if c.quick { " (--quick: small sizes)" } else { "" }
    );
    let _ = writeln!(s, "| Duration | {:.0} s |\n", report.duration_seconds);
    if e.place == crate::environment::Place::LabTcg {
        let _ = writeln!(
            s,
            "Every figure here was measured inside the lab (L1 under QEMU TCG, KVM nested under TCG): \
             absolute numbers are emulated and slow; compare ratios within this run only.\n"
        );
    }
    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(
        s,
        "| Target | What | Ours (median) | Bound | Verdict |\n|---|---|---|---|---|"
    );
    for t in &report.targets {
        let _ = writeln!(s, "{}", target_line(t));
    }
    s.push('\n');
    if !report.notes.is_empty() {
        let _ = writeln!(s, "## Notes\n");
        for n in &report.notes {
            let _ = writeln!(s, "- {n}");
        }
        s.push('\n');
    }
    if !report.failures.is_empty() {
        let _ = writeln!(s, "## Failures\n");
        for f in &report.failures {
            let _ = writeln!(
                s,
                "- **{}/{}**: {}",
                f.scenario,
                f.subject,
                f.error.replace('\n', " ")
            );
        }
        s.push('\n');
    }
    let _ = writeln!(s, "## Results\n");
    let _ = writeln!(
        s,
        "Statistics over the measured runs. Where: {}.\n",
        e.place_description
    );
    let mut scenario = None;
    for m in &report.measurements {
        if scenario != Some(m.scenario) {
            scenario = Some(m.scenario);
            let _ = writeln!(s, "\n### {}\n", m.scenario);
            let _ = writeln!(
                s,
                "| Subject | Metric | Unit | Median | Min | p95 | Stddev | n |\n|---|---|---|---|---|---|---|---|"
            );
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            m.subject,
            m.metric,
            m.unit,
            num(m.stats.median),
            num(m.stats.min),
            num(m.stats.p95),
            num(m.stats.stddev),
            m.stats.n
        );
    }
    if !report.ratios.is_empty() {
        let _ = writeln!(s, "\n## Ratios (medians of this run)\n");
        let _ = writeln!(s, "| Scenario | Metric | Ratio | Value |\n|---|---|---|---|");
        for r in &report.ratios {
            let _ = writeln!(
                s,
                "| {} | {} | {} / {} | {:.3} |",
                r.scenario, r.metric, r.numerator, r.denominator, r.ratio
            );
        }
    }
    if !report.subjects.is_empty() {
        let _ = writeln!(s, "\n## How each subject was run\n");
        let _ = writeln!(
            s,
            "The exact command lines and configuration behind every number above (temporary \
             paths as they were in this run; `ID` and `OUTCOME.json` stand for a fresh container \
             id and the launcher's outcome file, `root-N.ext4` for a run's own root-disk copy)."
        );
        for subject in &report.subjects {
            subject_section(&mut s, subject);
        }
    }
    if !report.charts.is_empty() {
        let _ = writeln!(
            s,
            "\n## Charts\n\nBars are medians; whiskers span min to p95; dots are the measured runs. \
                 `boot-phases.svg` stacks each subject's phase medians: where its start goes \
                 (peers without phases show their total).\n"
        );
        for c in &report.charts {
            let _ = writeln!(s, "![{c}]({c})\n");
        }
    }
    s
}

fn subject_section(s: &mut String, subject: &SubjectSetup) {
    let _ = writeln!(s, "\n### {}\n", subject.subject);
    let description = subject.description.trim_end_matches('.');
    if !description.is_empty() {
        let _ = writeln!(s, "{}.\n", sentence_case(description));
    }
    for setting in &subject.settings {
        let _ = writeln!(s, "- **{}**: {}", setting.name, setting.value.replace('\n', " "));
    }
    if !subject.settings.is_empty() {
        s.push('\n');
    }
    for c in &subject.commands {
        let _ = writeln!(
            s,
            "{} ({}):\n\n```sh\n{}\n```\n",
            c.scenario,
            c.purpose,
            shell_line(&c.argv)
        );
    }
    for c in &subject.configs {
        let json = serde_json::to_string_pretty(&c.content).unwrap_or_default();
        let _ = writeln!(
            s,
            "<details><summary>{}</summary>\n\n```json\n{json}\n```\n\n</details>\n",
            c.name
        );
    }
}

/// `text` with its first letter capitalised, unless its first word is a name spelt with a
/// capital inside (`gVisor`, `iPerf`), which stays as it is.
fn sentence_case(text: &str) -> String {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(_), Some(second)) if second.is_uppercase() => text.to_string(),
        (Some(first), _) => first.to_uppercase().chain(text.chars().skip(1)).collect(),
        (None, _) => String::new(),
    }
}

/// The short table printed to stdout when the run ends.
pub fn summary(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "sandbox bench — {}", report.environment.place_description);
    let _ = writeln!(
        s,
        "{:<9} {:<22} {:<34} {:>12} {:>12}  unit",
        "scenario", "subject", "metric", "median", "p95"
    );
    for m in report
        .measurements
        .iter()
        .filter(|m| !m.metric.starts_with("phase_"))
    {
        let _ = writeln!(
            s,
            "{:<9} {:<22} {:<34} {:>12} {:>12}  {}",
            m.scenario.name(),
            m.subject,
            m.metric,
            num(m.stats.median),
            num(m.stats.p95),
            m.unit
        );
    }
    for t in &report.targets {
        let _ = writeln!(
            s,
            "target {:<16} {}",
            t.name,
            match t.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            }
        );
    }
    if !report.failures.is_empty() {
        let _ = writeln!(s, "{} series failed (see report.md)", report.failures.len());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::sentence_case;

    #[test]
    fn descriptions_start_with_a_capital_but_names_keep_their_spelling() {
        assert_eq!(sentence_case("crun on a bundle"), "Crun on a bundle");
        assert_eq!(sentence_case("gVisor's runsc"), "gVisor's runsc");
        assert_eq!(sentence_case("QEMU microvm"), "QEMU microvm");
        assert_eq!(sentence_case("x"), "X");
        assert_eq!(sentence_case(""), "");
    }
}
