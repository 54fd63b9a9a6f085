//! The shape of content-hash ids: a prefix naming what the id identifies (`s-` sweep, `r-` run,
//! `c-` cell) and 16 lowercase hex digits (the first 8 bytes of a SHA-256 of the content). The
//! coordinator makes them (`sweep::ids`) and checks every id a peer quotes against this shape
//! (`grpc::validate`); a run id names a directory under the state directory, so the shape is
//! also what keeps paths inside it.
//!
//! [`SweepId`], [`RunId`], [`CellId`] (content ids) and [`LeaseId`] (an opaque id the store hands
//! out) are checked when made: a value of one of these types has its shape, and serializes as
//! the bare string (`#[serde(transparent)]`), so a type holding one hashes and stores exactly as
//! with a `String`. They compare with strings and borrow as `str` (a map keyed by ids is read
//! with a `&str`).
//!
//! The coordinator passes these from where an id enters to where it leaves: sweep expansion
//! makes them from digests, gRPC requests and wire decoding parse them (naming the field), and
//! the store parses the ids it reads back from SQL (an id of the wrong shape there is a corrupt
//! record).

use serde::{Deserialize, Deserializer, Serialize};

use crate::validate::{self, shown};

/// Hex digits after the prefix.
pub const CONTENT_ID_HEX_DIGITS: usize = 16;

/// What a content id identifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentId {
    Sweep,
    Run,
    Cell,
}

impl ContentId {
    pub const fn prefix(self) -> &'static str {
        match self {
            ContentId::Sweep => "s-",
            ContentId::Run => "r-",
            ContentId::Cell => "c-",
        }
    }

    /// `sweep`, `run` or `cell`, for messages.
    pub const fn what(self) -> &'static str {
        match self {
            ContentId::Sweep => "sweep",
            ContentId::Run => "run",
            ContentId::Cell => "cell",
        }
    }

    /// The id of this kind for a content digest (its first 8 bytes, in lowercase hex).
    pub fn from_digest(self, digest: &[u8]) -> String {
        let mut id = String::with_capacity(self.prefix().len() + CONTENT_ID_HEX_DIGITS);
        id.push_str(self.prefix());
        for byte in digest.iter().take(CONTENT_ID_HEX_DIGITS / 2) {
            id.push_str(&format!("{byte:02x}"));
        }
        id
    }

    /// Whether `value` has exactly the shape [`ContentId::from_digest`] gives this kind of id.
    pub fn matches(self, value: &str) -> bool {
        value.strip_prefix(self.prefix()).is_some_and(|hex| {
            hex.len() == CONTENT_ID_HEX_DIGITS
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    }
}

/// An id that does not have the shape its type requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown} is not a {what} id ({shape})")]
pub struct InvalidId {
    shown: String,
    what: &'static str,
    shape: String,
}

macro_rules! content_id {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// `value`, if it has the shape of this kind of content id.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                if $kind.matches(&value) {
                    Ok($name(value))
                } else {
                    Err(InvalidId {
                        shown: shown(&value, 64),
                        what: $kind.what(),
                        shape: format!(
                            "`{}` and {CONTENT_ID_HEX_DIGITS} lowercase hex digits",
                            $kind.prefix()
                        ),
                    })
                }
            }

            /// The id of a content digest.
            pub fn from_digest(digest: &[u8]) -> Self {
                $name($kind.from_digest(digest))
            }
        }

        id_common!($name);
    };
}

macro_rules! id_common {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Hashes, compares and orders as its string, so a map keyed by ids can be read with a
        /// `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(value: &str) -> Result<Self, InvalidId> {
                $name::new(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                $name::new(value)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $name::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

content_id!(
    /// A sweep's id: its name and the set of its cells, hashed.
    SweepId,
    ContentId::Sweep
);
content_id!(
    /// A run's id: what it trains, hashed.
    RunId,
    ContentId::Run
);
content_id!(
    /// A cell's id: its run id, attack and ε, hashed.
    CellId,
    ContentId::Cell
);

/// A lease's id, as the store hands it out: an opaque id (1–[`crate::limits::MAX_ID_BYTES`]
/// printable ASCII characters, the rule [`validate::id`] states).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct LeaseId(String);

impl LeaseId {
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
        let value = value.into();
        if validate::id("lease_id", &value).is_ok() {
            return Ok(LeaseId(value));
        }
        Err(InvalidId {
            shown: shown(&value, 64),
            what: "lease",
            shape: format!(
                "1-{} printable ASCII characters, no spaces",
                crate::limits::MAX_ID_BYTES
            ),
        })
    }
}

id_common!(LeaseId);

/// The typed id in the field `field` (a content id of its kind, or a lease id): missing when empty,
/// else `value` if it has the type's shape (the reason, otherwise, starts with the value).
pub fn parse_field<T>(field: &'static str, value: &str) -> validate::Checked<T>
where
    T: std::str::FromStr<Err = InvalidId>,
{
    if value.is_empty() {
        return Err(validate::FieldError::Missing(field));
    }
    value
        .parse()
        .map_err(|e: InvalidId| validate::invalid(field, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_ids_are_checked_when_made_and_when_read() {
        let run = RunId::from_digest(&[0x01; 32]);
        assert_eq!(run.as_str(), "r-0101010101010101");
        assert_eq!(RunId::new(run.to_string()), Ok(run.clone()));
        let e = RunId::new("c-0101010101010101").expect_err("a cell id");
        assert!(e.to_string().contains("is not a run id"), "{e}");
        assert!("../etc".parse::<CellId>().is_err());
        assert!(SweepId::new("s-0123456789abcdef").is_ok());
        assert!(LeaseId::new("l-1").is_ok());
        assert!(LeaseId::new("").is_err());
        assert!(LeaseId::new("l 1").is_err());
        use serde::de::IntoDeserializer;
        let read = |s: &'static str| {
            RunId::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(s))
        };
        assert_eq!(read("r-0101010101010101"), Ok(run));
        assert!(read("r-../../etc").is_err());
    }

    #[test]
    fn typed_ids_compare_and_look_up_as_their_strings() {
        let run = RunId::from_digest(&[0x01; 32]);
        assert_eq!(run, "r-0101010101010101");
        assert!(run == *"r-0101010101010101");
        assert_eq!(run, "r-0101010101010101".to_owned());
        assert_ne!(run, "r-0101010101010102");
        let mut by_id = std::collections::HashMap::new();
        by_id.insert(run.clone(), 7);
        assert_eq!(by_id.get("r-0101010101010101"), Some(&7));
        let mut set = std::collections::BTreeSet::new();
        set.insert(LeaseId::new("l-1").expect("a lease id"));
        assert!(set.contains("l-1"));
        assert_eq!(String::from(run), "r-0101010101010101");
    }

    #[test]
    fn made_ids_have_the_shape_checked() {
        let id = ContentId::Run.from_digest(&[0xab; 32]);
        assert_eq!(id, "r-abababababababab");
        assert!(ContentId::Run.matches(&id));
        assert!(!ContentId::Cell.matches(&id));
        assert!(!ContentId::Run.matches("r-ABABABABABABABAB"));
        assert!(!ContentId::Run.matches("r-abab"));
    }
}
