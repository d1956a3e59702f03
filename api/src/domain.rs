//! Item rules shared by every layer: how text is cleaned, how timestamps are written, and what
//! makes two create requests the same one (an idempotency key).

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// A stored item, exactly as the seed service returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Item {
    /// Assigned by the database; never reused, higher is newer.
    #[schema(example = 42)]
    pub id: i64,
    /// The trimmed text.
    #[schema(example = "buy milk")]
    pub text: String,
    /// UTC creation time in Python isoformat with microseconds.
    #[schema(example = "2026-01-02T03:04:05.123456+00:00")]
    pub created_at: String,
}

/// Item text that has passed validation: trimmed like Python's `str.strip()`, not empty and not
/// longer than the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemText(String);

/// Why a text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("text must not be empty")]
    Empty,
    #[error("String should have at most {max} characters")]
    TooLong { max: usize },
}

impl ItemText {
    /// Trims surrounding whitespace (Unicode included) and refuses what is left empty, or longer
    /// than `max_chars` characters (counted as Python's `len` counts them: code points).
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, TextError> {
        let trimmed = python_strip(raw);
        if trimmed.is_empty() {
            return Err(TextError::Empty);
        }
        // Bytes bound characters from above: most texts need no count.
        if trimmed.len() > max_chars && trimmed.chars().count() > max_chars {
            return Err(TextError::TooLong { max: max_chars });
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The characters Python's `str.isspace()` accepts, which `str.strip()` removes.
///
/// That is Unicode `White_Space` (what Rust's `char::is_whitespace` checks) plus the four ASCII
/// information separators U+001C..U+001F, which Python also counts as whitespace.
pub fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.strip()` with no arguments, as the seed service applies it.
pub fn python_strip(raw: &str) -> &str {
    raw.trim_matches(is_python_whitespace)
}

/// A UTC timestamp in the format Python's `datetime.isoformat()` gives an aware UTC datetime:
/// `2026-01-02T03:04:05.123456+00:00`. Python leaves the fraction out when it is zero; we always
/// write it, which every isoformat parser (Python's `fromisoformat` included) reads the same.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

/// The current time as a stored `created_at` value.
pub fn now_timestamp() -> String {
    format_timestamp(OffsetDateTime::now_utc())
}

/// A client's `Idempotency-Key` for a create, with the fingerprint of what it asked to create: a
/// retry with the same key and the same text gets the item the first attempt created; the same
/// key with another text is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    key: String,
    fingerprint: String,
}

/// Why an `Idempotency-Key` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "Idempotency-Key must be 1 to {max} visible ASCII characters (a UUID, say), optionally in \
     double quotes",
    max = IdempotencyKey::MAX_LEN
)]
pub struct KeyError;

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    /// The header's value: a token or, as the IETF draft writes it, a quoted string.
    pub fn parse(value: &[u8], text: &ItemText) -> Result<Self, KeyError> {
        let unquoted = value
            .strip_prefix(b"\"")
            .and_then(|inner| inner.strip_suffix(b"\""))
            .unwrap_or(value);
        let visible = |byte: &u8| byte.is_ascii_graphic() && *byte != b'"';
        if unquoted.is_empty() || unquoted.len() > Self::MAX_LEN || !unquoted.iter().all(visible) {
            return Err(KeyError);
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_str().as_bytes());
        let fingerprint = digest
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Ok(Self {
            key: String::from_utf8(unquoted.to_vec()).map_err(|_| KeyError)?,
            fingerprint,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// SHA-256 of the text to create, in hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn an_idempotency_key_is_a_token_or_a_quoted_string_and_its_fingerprint_is_the_text() {
        let milk = ItemText::parse("milk", 100).unwrap();
        let plain = IdempotencyKey::parse(b"8e03978e-40d5-43e8-bc93-6894a57f9324", &milk).unwrap();
        let quoted =
            IdempotencyKey::parse(b"\"8e03978e-40d5-43e8-bc93-6894a57f9324\"", &milk).unwrap();
        assert_eq!(plain, quoted);
        assert_eq!(plain.as_str(), "8e03978e-40d5-43e8-bc93-6894a57f9324");
        let eggs = ItemText::parse("eggs", 100).unwrap();
        let other = IdempotencyKey::parse(b"8e03978e-40d5-43e8-bc93-6894a57f9324", &eggs).unwrap();
        assert_ne!(plain.fingerprint(), other.fingerprint());
        assert_eq!(plain.fingerprint().len(), 64);
    }

    #[test]
    fn an_idempotency_key_must_be_short_visible_ascii() {
        let milk = ItemText::parse("milk", 100).unwrap();
        for bad in [
            &b""[..],
            b"\"\"",
            b"has space",
            b"tab\there",
            "caf\u{e9}".as_bytes(),
            b"a\"b",
        ] {
            assert_eq!(IdempotencyKey::parse(bad, &milk), Err(KeyError), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&[b'k'; 255], &milk).is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 256], &milk).is_err());
    }

    #[test]
    fn parse_trims_ascii_whitespace_and_keeps_inner_spaces() {
        let text = ItemText::parse(" \t buy  milk \r\n", 100).unwrap();
        assert_eq!(text.as_str(), "buy  milk");
    }

    #[test]
    fn parse_trims_unicode_whitespace_like_python() {
        // NBSP, ideographic space, line separator, NEL, em space, narrow NBSP.
        let raw = "\u{a0}\u{3000}\u{2028}\u{85}\u{2003}eggs\u{202f}\u{205f}\u{1680}";
        assert_eq!(ItemText::parse(raw, 100).unwrap().as_str(), "eggs");
    }

    #[test]
    fn parse_trims_python_only_separators() {
        // U+001C..U+001F are whitespace for Python but not for Rust's char::is_whitespace.
        assert_eq!(
            ItemText::parse("\u{1c}\u{1d}x\u{1e}\u{1f}", 100)
                .unwrap()
                .as_str(),
            "x"
        );
    }

    #[test]
    fn parse_keeps_characters_python_does_not_strip() {
        // Zero-width space and the Mongolian vowel separator are not whitespace in Python 3.
        assert_eq!(
            ItemText::parse("\u{200b}x\u{180e}", 100).unwrap().as_str(),
            "\u{200b}x\u{180e}"
        );
    }

    #[test]
    fn parse_rejects_empty_and_whitespace_only_text() {
        for raw in ["", " ", "\n\t", "\u{a0}\u{3000}", "\u{1f}"] {
            assert_eq!(ItemText::parse(raw, 100), Err(TextError::Empty), "{raw:?}");
        }
    }

    #[test]
    fn parse_counts_characters_not_bytes_against_the_limit() {
        // Three characters in nine bytes fit a limit of three; a fourth does not.
        assert!(ItemText::parse("日本語", 3).is_ok());
        assert_eq!(
            ItemText::parse("日本語!", 3),
            Err(TextError::TooLong { max: 3 })
        );
        // Surrounding whitespace is not counted: it is not stored.
        assert!(ItemText::parse("  abc  ", 3).is_ok());
    }

    #[test]
    fn python_whitespace_matches_python_isspace_for_every_code_point() {
        // The exact set CPython 3.11 reports for `chr(c).isspace()` over all of Unicode.
        let python: Vec<u32> = (0x09..=0x0d)
            .chain(0x1c..=0x20)
            .chain([0x85, 0xa0, 0x1680])
            .chain(0x2000..=0x200a)
            .chain([0x2028, 0x2029, 0x202f, 0x205f, 0x3000])
            .collect();
        for code in 0..=0x10_FFFFu32 {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            assert_eq!(
                is_python_whitespace(c),
                python.contains(&code),
                "U+{code:04X}"
            );
        }
    }

    #[test]
    fn timestamps_look_like_python_isoformat_with_microseconds() {
        let at = datetime!(2026-01-02 03:04:05.123456 UTC);
        assert_eq!(format_timestamp(at), "2026-01-02T03:04:05.123456+00:00");
    }

    #[test]
    fn timestamps_keep_zero_microseconds_and_convert_to_utc() {
        let at = datetime!(2026-07-01 02:00:00 +02:00);
        assert_eq!(format_timestamp(at), "2026-07-01T00:00:00.000000+00:00");
    }

    #[test]
    fn now_timestamp_has_the_fixed_width_format() {
        let now = now_timestamp();
        assert_eq!(now.len(), "2026-01-02T03:04:05.123456+00:00".len());
        assert!(now.ends_with("+00:00"));
    }
}
