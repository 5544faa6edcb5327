//! The command line's `--name value` pairs: each flag named once, each
//! value parsed and checked against its bounds, and a flag no subcommand
//! takes an error, so that a typo in a script fails instead of measuring
//! the default.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// The flags of one command line, taken one by one as the subcommand reads them.
pub struct Flags {
    values: BTreeMap<String, String>,
}

impl Flags {
    /// Pairs up `--name value` words.
    pub fn parse(words: &[String]) -> Result<Flags, String> {
        let mut values = BTreeMap::new();
        let mut words = words.iter();
        while let Some(word) = words.next() {
            let name = word
                .strip_prefix("--")
                .filter(|name| !name.is_empty())
                .ok_or_else(|| format!("expected a --flag, found {word:?}"))?;
            let value = words
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            if values.insert(name.to_owned(), value.clone()).is_some() {
                return Err(format!("--{name} is given twice"));
            }
        }
        Ok(Flags { values })
    }

    /// Takes `--name`, or `default` when absent, and checks it is within `bounds`.
    pub fn take<T>(
        &mut self,
        name: &str,
        default: T,
        bounds: RangeInclusive<T>,
    ) -> Result<T, String>
    where
        T: FromStr + PartialOrd + Display,
    {
        let value = match self.values.remove(name) {
            None => default,
            Some(text) => text
                .parse()
                .map_err(|_| format!("--{name}: {text:?} is not a number"))?,
        };
        if !bounds.contains(&value) {
            return Err(format!(
                "--{name} must be from {} to {}, not {value}",
                bounds.start(),
                bounds.end()
            ));
        }
        Ok(value)
    }

    /// Takes `--name` as one of `choices`, or the first when absent.
    pub fn take_choice(
        &mut self,
        name: &str,
        choices: &[&'static str],
    ) -> Result<&'static str, String> {
        let Some(text) = self.values.remove(name) else {
            return Ok(choices[0]);
        };
        choices
            .iter()
            .find(|choice| **choice == text)
            .copied()
            .ok_or_else(|| {
                format!(
                    "--{name} must be one of {}, not {text:?}",
                    choices.join(", ")
                )
            })
    }

    /// An error naming every flag not taken: none of the subcommand's.
    pub fn finish(self) -> Result<(), String> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(name) => Err(format!("unknown flag --{name}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn values_are_parsed_bounded_and_every_flag_must_be_known() {
        let mut flags = Flags::parse(&words("--count 20 --compression none")).unwrap();
        assert_eq!(flags.take("count", 1u64, 1..=100), Ok(20));
        assert_eq!(flags.take("seed", 42u64, 0..=u64::MAX), Ok(42));
        assert_eq!(
            flags.take_choice("compression", &["snappy", "none"]),
            Ok("none")
        );
        assert!(flags.finish().is_ok());

        let mut flags = Flags::parse(&words("--count 0 --cuont 5")).unwrap();
        assert!(flags.take("count", 1u64, 1..=100).is_err());
        assert_eq!(flags.finish(), Err("unknown flag --cuont".to_owned()));

        assert!(Flags::parse(&words("--count")).is_err());
        assert!(Flags::parse(&words("count 5")).is_err());
        assert!(Flags::parse(&words("--count 1 --count 2")).is_err());
    }
}
