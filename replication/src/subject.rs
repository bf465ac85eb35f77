//! NATS subjects for strata streams, with a reversible escaping of stream ids.
//!
//! NATS subjects are `.`-separated tokens; a token must not contain whitespace, `.`, `*` or `>`.
//! A strata stream id is any 1..=255 bytes of UTF-8, so it is escaped into one token: every byte
//! outside `[A-Za-z0-9_-]` becomes `%XX` (two upper-case hex digits). `%` itself is escaped, so
//! the escaping is reversible, and the token is never empty because stream ids are not.

use crate::ReplicationError;

/// Escapes `text` into one NATS subject token: bytes outside `[A-Za-z0-9_-]` become `%XX`.
pub fn escape_token(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            // Two hex digits, upper case: reversible by `unescape_token`.
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Reverses [`escape_token`]. `None` when `token` is not the output of `escape_token` (a byte
/// that should have been escaped, a bad `%XX`, or bytes that are not UTF-8).
pub fn unescape_token(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let high = (hex[0] as char).to_digit(16)?;
            let low = (hex[1] as char).to_digit(16)?;
            if !hex
                .iter()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            {
                return None;
            }
            out.push((high * 16 + low) as u8);
            i += 3;
        } else if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks a subject prefix: one or more `.`-separated tokens, none empty, without whitespace,
/// `*` or `>`.
pub fn validate_prefix(prefix: &str) -> Result<(), ReplicationError> {
    let bad = prefix.is_empty()
        || prefix.split('.').any(|token| {
            token.is_empty()
                || token
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
        });
    if bad {
        return Err(ReplicationError::Config(format!(
            "subject prefix {prefix:?} is not a valid NATS subject: use `.`-separated, non-empty \
             tokens without whitespace, `*` or `>`"
        )));
    }
    Ok(())
}

/// The subject an event of `stream_id` is published on: `<prefix>.<escaped stream id>`.
pub fn event_subject(prefix: &str, stream_id: &str) -> String {
    format!("{prefix}.{}", escape_token(stream_id))
}

/// The subjects a JetStream stream must capture for `prefix`: `<prefix>.>`.
pub fn wildcard(prefix: &str) -> String {
    format!("{prefix}.>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_ids_are_unchanged_and_unsafe_bytes_are_escaped() {
        assert_eq!(escape_token("order-1_A"), "order-1_A");
        assert_eq!(escape_token("a.b c*>%"), "a%2Eb%20c%2A%3E%25");
        assert_eq!(escape_token("é"), "%C3%A9");
    }

    #[test]
    fn escaping_round_trips() {
        for id in [
            "order-1",
            "a.b",
            "x y\tz\n",
            "*>",
            "%41",
            "über/stream.1",
            "device-a/orders.7",
            "日本",
        ] {
            let token = escape_token(id);
            assert!(!token.contains(['.', '*', '>', ' ', '\t', '\n']), "{token}");
            assert_eq!(unescape_token(&token).as_deref(), Some(id));
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for token in ["%", "%4", "%zz", "%2e", "a.b", "a b", "%FF"] {
            assert_eq!(unescape_token(token), None, "{token}");
        }
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(validate_prefix("strata").is_ok());
        assert!(validate_prefix("strata.device-a").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a\nb"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
