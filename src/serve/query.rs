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
    struct Seed;
    impl<'de> serde::de::Visitor<'de> for Seed {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a seed: {SEED_RANGE}")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Seed)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("seed {v} is out of range: a seed is {SEED_RANGE}")))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "seed {v} is not an integer in range: a seed is {SEED_RANGE}"
            )))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| E::custom(format!("seed '{}' is not {SEED_RANGE}", crate::names::escaped_text(v))))
        }
    }
    d.deserialize_option(Seed)
}

/// A tile size: a JSON integer or a number in a string (as seeds are taken), within usize; the range the
/// model takes is checked with the other options.
pub fn tile<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    struct Tile;
    impl<'de> serde::de::Visitor<'de> for Tile {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a tile size: a whole number of pixels")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Tile)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            usize::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("tile {v} is out of range")))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("tile {v} is not a whole number of pixels")))
                .and_then(|v| self.visit_u64(v))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!("tile {v} is not a whole number of pixels")))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.trim().parse::<usize>().map(Some).map_err(|_| {
                E::custom(format!(
                    "tile '{}' is not a whole number of pixels",
                    crate::names::escaped_text(v)
                ))
            })
        }
    }
    d.deserialize_option(Tile)
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
        let params: crate::serve::kserve::InferParameters =
            serde_json::from_str(r#"{"tile": "64", "seed": "7"}"#).unwrap();
        assert_eq!((params.tile, params.seed), (Some(64), Some(7)));
        let uri: axum::http::Uri = "/x?tile=96".parse().unwrap();
        assert_eq!(
            axum::extract::Query::<RestoreQuery>::try_from_uri(&uri).unwrap().0.tile,
            Some(96)
        );
    }

    /// A KServe request that asks for an output other than `output` is refused by name.
    #[test]
    fn unknown_requested_outputs_are_refused_by_name() {
        let req = |outputs: &str| -> crate::serve::kserve::InferRequest {
            serde_json::from_str(&format!(r#"{{"inputs": [], "outputs": {outputs}}}"#)).unwrap()
        };
        assert_eq!(req(r#"[{"name": "output"}]"#).check_outputs(), Ok(()));
        assert_eq!(req("[]").check_outputs(), Ok(()));
        let e = req(r#"[{"name": "output"}, {"name": "mask"}]"#)
            .check_outputs()
            .unwrap_err();
        assert_eq!(e, "unknown output 'mask' (outputs: output)");
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
