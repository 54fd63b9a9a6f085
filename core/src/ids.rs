//! The shape of content-hash ids: a prefix naming what the id identifies (`s-` sweep, `r-` run,
//! `c-` cell) and 16 lowercase hex digits (the first 8 bytes of a SHA-256 of the content). The
//! coordinator makes them (`sweep::ids`) and checks every id a peer quotes against this shape
//! (`grpc::validate`); a run id names a directory under the state directory, so the shape is
//! also what keeps paths inside it.

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

#[cfg(test)]
mod tests {
    use super::*;

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
