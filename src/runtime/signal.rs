//! Signal names and numbers as `kill` takes them: `TERM`, `SIGTERM`, `15`.

/// The signal number of `input`, or an error naming it.
pub fn parse(input: &str) -> anyhow::Result<i32> {
    if let Ok(n) = input.parse::<i32>() {
        anyhow::ensure!(
            nix::sys::signal::Signal::try_from(n).is_ok(),
            "unknown signal {input:?}: give a name such as TERM or KILL, or a number from 1 to 31"
        );
        return Ok(n);
    }
    let upper = input.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| {
            anyhow::anyhow!(
                "unknown signal {input:?}: give a name such as TERM or KILL, or a number from 1 to 31"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse("SIGKILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse("usr1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse("9").unwrap(), 9);
        assert!(parse("NOPE").unwrap_err().to_string().contains("NOPE"));
        assert!(parse("999").is_err());
    }
}
