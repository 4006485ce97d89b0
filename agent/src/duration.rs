//! Go-style durations (`720h`, `1h30m`, `90s`, `500ms`), as Argo CD, Flux and sealed-secrets
//! users write them in flags and manifests.

use std::time::Duration;

/// A duration that is not in Go syntax.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to parse duration {0:?}: expected a Go duration such as 30s, 3m, 720h or 1h30m")]
pub struct InvalidDuration(pub String);

/// Parses a Go duration: one or more `<number><unit>` with units `ms`, `s`, `m`, `h`, or `0`.
pub fn parse(text: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration(text.to_string());
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(invalid()),
        };
        let number = u32::try_from(number).map_err(|_| invalid())?;
        total = total
            .checked_add(unit.checked_mul(number).ok_or_else(invalid)?)
            .ok_or_else(invalid)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse("720h"), Ok(Duration::from_secs(720 * 3600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn other_syntax_is_refused() {
        for bad in ["", "h", "10", "10d", "1.5h", "-1h", "1h 30m"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
