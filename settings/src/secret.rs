//! A secret string (a bearer token) that never shows itself: `Debug`, `Display` and
//! serialisation (what `config print` writes) all print a fixed mask, so a token cannot leak
//! into logs or terminal scrollback by accident. Only [`Secret::expose`] returns the text.

use std::fmt;

/// What every secret prints as: fixed length, so not even the token's length leaks.
pub const MASK: &str = "********";

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret text, for the one place that must send or hash it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({MASK})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Checks that a bearer token can travel in an HTTP header and is not trivially guessable.
pub fn check_token(what: &str, token: &Secret) -> Result<(), String> {
    let text = token.expose();
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{what} contains spaces, control or non-ASCII characters (tokens travel in an HTTP header)"
        ));
    }
    if text.len() < MIN_TOKEN_CHARS || text.len() > MAX_TOKEN_CHARS {
        return Err(format!(
            "{what} is {} characters long; tokens must have {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} \
             (make one with `openssl rand -hex 32`)",
            text.len()
        ));
    }
    Ok(())
}

pub const MIN_TOKEN_CHARS: usize = 16;
pub const MAX_TOKEN_CHARS: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_itself() {
        let s = Secret::new("hunter2-hunter2-hunter2");
        assert_eq!(format!("{s}"), MASK);
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-hunter2-hunter2");
    }

    #[test]
    fn token_rules_name_the_problem() {
        assert!(check_token("token", &Secret::new("a".repeat(32))).is_ok());
        let short = check_token("worker token 2", &Secret::new("abc")).unwrap_err();
        assert!(
            short.contains("worker token 2") && short.contains("3 characters"),
            "{short}"
        );
        assert!(check_token("t", &Secret::new("with space 0123456789")).is_err());
        assert!(check_token("t", &Secret::new("é".repeat(20))).is_err());
    }
}
