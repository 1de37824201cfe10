//! Values as registry:2 reads them. Environment values arrive as strings; registry:2
//! accepts them for bools and numbers too.

use std::time::Duration;

use serde::{de, Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Int(u64),
    Str(String),
}

/// A whole number (a count, or bytes), as a number or a string of digits (from the
/// environment).
pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Scalar>::deserialize(d)? {
        None => Ok(None),
        Some(Scalar::Int(n)) => Ok(Some(n)),
        Some(Scalar::Str(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("{s:?} is not a whole number"))),
        Some(Scalar::Bool(_)) => Err(de::Error::custom("expected a whole number")),
    }
}

pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Scalar>::deserialize(d)? {
        None => Ok(None),
        Some(Scalar::Bool(b)) => Ok(Some(b)),
        Some(Scalar::Str(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" | "" => Ok(Some(false)),
            _ => Err(de::Error::custom(format!("{s:?} is not true or false"))),
        },
        Some(Scalar::Int(n)) => Ok(Some(n != 0)),
    }
}

/// Go durations (`168h`, `1m30s`, `500ms`) or a number of seconds.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Option::<Scalar>::deserialize(d)? {
        None => Ok(None),
        Some(Scalar::Int(n)) => Ok(Some(Duration::from_secs(n))),
        Some(Scalar::Str(s)) => wharf_oci::units::parse_duration(&s)
            .map(Some)
            .map_err(de::Error::custom),
        Some(Scalar::Bool(_)) => Err(de::Error::custom("expected a duration like 300s or 168h")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wharf_oci::units::parse_duration;

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_duration("168h").unwrap(),
            Duration::from_secs(168 * 3600)
        );
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("10 parsecs").is_err());
    }
}
