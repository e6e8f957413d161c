//! Human size strings ("512M", "1G", "64MiB", "4096") to bytes and back.
//!
//! Units are binary, as in Docker: `k`/`K`/`KB`/`KiB` = 1024, `M` = 1024², `G` = 1024³,
//! `T` = 1024⁴; a bare number or a `B` suffix is bytes. Decimals are accepted ("1.5G").

use crate::SpecError;

/// Parses a size such as "512M", "1G", "64MiB" or "1.5g" into bytes.
pub fn parse_size(input: &str) -> Result<u64, SpecError> {
    let bad = |why: &str| SpecError::Size {
        input: input.to_string(),
        why: why.to_string(),
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(bad("it does not start with a number"));
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "ki" | "kib" => 10,
        "m" | "mb" | "mi" | "mib" => 20,
        "g" | "gb" | "gi" | "gib" => 30,
        "t" | "tb" | "ti" | "tib" => 40,
        _ => {
            return Err(bad(&format!(
                "unknown unit {unit:?} (known: B, K, M, G, T, with optional iB)"
            )))
        }
    };
    let multiplier = 1u64 << shift;
    let bytes = if let Some((whole, frac)) = number.split_once('.') {
        if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
            return Err(bad("it is not a number"));
        }
        let value: f64 = number.parse().map_err(|_| bad("it is not a number"))?;
        let bytes = value * multiplier as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(bad("it is too large"));
        }
        bytes.round() as u64
    } else {
        let value: u64 = number.parse().map_err(|_| bad("it is too large"))?;
        value
            .checked_mul(multiplier)
            .ok_or_else(|| bad("it is too large"))?
    };
    if bytes == 0 {
        return Err(bad("it is zero"));
    }
    Ok(bytes)
}

/// Formats bytes the way the limits are usually written: "64 MiB", "1.5 GiB", "512 B".
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut value = bytes as f64;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_spellings() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64mb").unwrap(), 64 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10k").unwrap(), 10 << 10);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size(" 2 G ").unwrap(), 2 << 30);
    }

    #[test]
    fn refuses_bad_strings_naming_them() {
        for bad in [
            "",
            "M",
            "12Q",
            "1..5G",
            "-5M",
            "0",
            "0M",
            "99999999999999999999",
            "100000000T",
            ".",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_round_sizes_plainly() {
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(100), "100 B");
    }
}
