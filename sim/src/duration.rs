//! Durations as people type them on the command line: `500ms`, `60s`, `2m`, `1h`.

use std::fmt;

use meshsync_core::Duration;

/// Why a duration's text was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationParseError {
    text: String,
}

impl fmt::Display for DurationParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration `{}`: expected a whole number and a unit (us, ms, s, m, h), e.g. 500ms, 60s, 2m",
            self.text
        )
    }
}

impl std::error::Error for DurationParseError {}

/// Parses a whole number followed by a unit: `us`, `ms`, `s`, `m` or `h`.
/// A bare number is refused: `60` could mean seconds or milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationParseError> {
    let error = || DurationParseError {
        text: text.to_owned(),
    };
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(error)?;
    let (number, unit) = trimmed.split_at(digits_end);
    if number.is_empty() {
        return Err(error());
    }
    let value: u64 = number.parse().map_err(|_| error())?;
    let micros_per_unit: u64 = match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60 * 1_000_000,
        "h" => 60 * 60 * 1_000_000,
        _ => return Err(error()),
    };
    let micros = value.checked_mul(micros_per_unit).ok_or_else(error)?;
    Ok(Duration::from_micros(micros))
}

/// `duration` as [`parse_duration`] reads it back: a whole number in the
/// largest unit that holds it exactly (`10s`, `1500ms`, `2m`).
pub fn format_duration(duration: Duration) -> String {
    let micros = duration.as_micros();
    let units: [(&str, u128); 4] = [
        ("h", 60 * 60 * 1_000_000),
        ("m", 60 * 1_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
    ];
    for (unit, micros_per_unit) in units {
        if micros > 0 && micros % micros_per_unit == 0 {
            return format!("{}{unit}", micros / micros_per_unit);
        }
    }
    format!("{micros}us")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn formats_what_it_parses_back() {
        for text in ["0us", "250us", "1500ms", "10s", "90s", "2m", "1h", "61m"] {
            let duration = parse_duration(text).expect("valid");
            assert_eq!(format_duration(duration), text);
        }
        assert_eq!(format_duration(Duration::from_millis(60_000)), "1m");
    }

    #[test]
    fn refuses_what_is_ambiguous_or_malformed() {
        for text in [
            "",
            "60",
            "s",
            "-1s",
            "1.5s",
            "10 s",
            "10sec",
            "5d",
            "ms10",
            "99999999999999999999s",
            "18446744073709551615h",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} must be refused");
        }
        let message = parse_duration("60").unwrap_err().to_string();
        assert!(
            message.contains("`60`") && message.contains("60s"),
            "{message}"
        );
    }
}
