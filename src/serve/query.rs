//! The options of one restore, from the v1 query string or the v2 request parameters: typed, unknown names
//! refused, and a seed that must be an integer in u64's range (not a float, not negative) in either form.

use serde::{Deserialize, Deserializer};

/// Options of one restore.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreQuery {
    #[serde(default, deserialize_with = "seed")]
    pub seed: Option<u64>,
    pub format: Option<String>,
    #[serde(default, deserialize_with = "tile")]
    pub tile: Option<usize>,
}

const SEED_RANGE: &str = "an integer from 0 to 18446744073709551615";

/// A seed: a JSON integer, or a query-string number, within u64.
pub fn seed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_option(Whole {
        what: "seed",
        range: SEED_RANGE,
        to: |v| Some(v),
    })
}

/// A tile size: a JSON integer or a number in a string (as seeds are taken), within usize; the range the
/// model takes is checked with the other options.
pub fn tile<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    d.deserialize_option(Whole {
        what: "tile",
        range: "a whole number of pixels",
        to: |v| usize::try_from(v).ok(),
    })
}

/// A whole number given as a JSON integer or as text (a query string, a string parameter): `what` names it
/// in errors, `range` says what it must be, `to` narrows a u64 (None: out of range). Never a float.
struct Whole<T> {
    what: &'static str,
    range: &'static str,
    to: fn(u64) -> Option<T>,
}

impl<T> Whole<T> {
    fn refuse<E: serde::de::Error>(&self, v: impl std::fmt::Display) -> E {
        E::custom(format!("{} {v} is not {}", self.what, self.range))
    }
}

impl<'de, T> serde::de::Visitor<'de> for Whole<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a {}: {}", self.what, self.range)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        (self.to)(v).map(Some).ok_or_else(|| self.refuse(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(self.refuse(v)),
        }
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(self.refuse(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match v.trim().parse::<u64>() {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(self.refuse(format_args!("'{}'", crate::names::escaped_text(v)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tile is taken as a seed is: a JSON integer or a number in a string, in the query string too.
    #[test]
    fn tiles_are_whole_numbers_as_integers_or_strings() {
        let json = |s: &str| {
            serde_json::from_str::<RestoreQuery>(s)
                .map(|q| q.tile)
                .map_err(|e| e.to_string())
        };
        assert_eq!(json(r#"{"tile": 64}"#), Ok(Some(64)));
        assert_eq!(json(r#"{"tile": "64"}"#), Ok(Some(64)));
        assert_eq!(json(r#"{"tile": null}"#), Ok(None));
        for bad in ["-1", "1.5", "\"6x\""] {
            let e = json(&format!(r#"{{"tile": {bad}}}"#)).unwrap_err();
            assert!(e.contains("whole number of pixels"), "{bad}: {e}");
        }
        let uri: axum::http::Uri = "/x?tile=96".parse().unwrap();
        assert_eq!(
            axum::extract::Query::<RestoreQuery>::try_from_uri(&uri).unwrap().0.tile,
            Some(96)
        );
    }

    #[test]
    fn seeds_are_integers_in_range_in_json_and_query_strings() {
        let json = |s: &str| {
            serde_json::from_str::<RestoreQuery>(s)
                .map(|q| q.seed)
                .map_err(|e| e.to_string())
        };
        assert_eq!(json(r#"{"seed": 18446744073709551615}"#), Ok(Some(u64::MAX)));
        assert_eq!(json(r#"{"seed": null}"#), Ok(None));
        assert_eq!(json("{}"), Ok(None));
        for bad in ["1e20", "99999999999999999999", "-1", "1.5", "\"7x\""] {
            let e = json(&format!(r#"{{"seed": {bad}}}"#)).unwrap_err();
            assert!(e.contains("0 to 18446744073709551615"), "{bad}: {e}");
            assert!(!e.contains("floating point"), "{bad}: {e}");
        }
        let query = |s: &str| {
            let uri: axum::http::Uri = format!("/x?{s}").parse().unwrap();
            axum::extract::Query::<RestoreQuery>::try_from_uri(&uri)
                .map(|q| q.0.seed)
                .map_err(|e| e.body_text())
        };
        assert_eq!(query("seed=42"), Ok(Some(42)));
        let e = query("seed=99999999999999999999").unwrap_err();
        assert!(e.contains("0 to 18446744073709551615"), "{e}");
    }
}
