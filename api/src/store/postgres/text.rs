//! Item text as Postgres stores it.
//!
//! Postgres `text` cannot hold U+0000, which SQLite (and so the seed service) stores and returns.
//! To keep every text the API accepts, U+0000 is written as U+FFFF `0`, and U+FFFF itself as
//! U+FFFF U+FFFF. U+FFFF is a Unicode noncharacter, reserved for exactly this kind of internal
//! use, so stored texts are unchanged in practice; only what is read through this module is
//! decoded.

use crate::domain::Item;
use std::borrow::Cow;

const ESCAPE: char = '\u{FFFF}';

/// The stored form of `text`.
pub fn encode(text: &str) -> Cow<'_, str> {
    if !text.contains(['\0', ESCAPE]) {
        return Cow::Borrowed(text);
    }
    let mut stored = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\0' => stored.extend([ESCAPE, '0']),
            ESCAPE => stored.extend([ESCAPE, ESCAPE]),
            c => stored.push(c),
        }
    }
    Cow::Owned(stored)
}

/// The text `stored` holds. An escape this module did not write is kept as it is.
pub fn decode(stored: String) -> String {
    if !stored.contains(ESCAPE) {
        return stored;
    }
    let mut text = String::with_capacity(stored.len());
    let mut chars = stored.chars();
    while let Some(c) = chars.next() {
        if c != ESCAPE {
            text.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => text.push('\0'),
            Some(ESCAPE) => text.push(ESCAPE),
            Some(other) => text.extend([ESCAPE, other]),
            None => text.push(ESCAPE),
        }
    }
    text
}

/// An item as a statement read it back (`id, text, created_at`).
pub(super) fn item_from_row(row: &tokio_postgres::Row) -> Result<Item, tokio_postgres::Error> {
    Ok(Item {
        id: row.try_get(0)?,
        text: decode(row.try_get(1)?),
        created_at: decode(row.try_get(2)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_stored_as_it_is() {
        assert!(matches!(
            encode("buy milk 😀"),
            Cow::Borrowed("buy milk 😀")
        ));
        assert_eq!(decode("buy milk 😀".into()), "buy milk 😀");
    }

    #[test]
    fn nul_and_the_escape_itself_round_trip() {
        for text in [
            "nul\0inside",
            "\0",
            "\0\0",
            "\u{FFFF}",
            "\u{FFFF}0",
            "a\u{FFFF}\0\u{FFFF}\u{FFFF}b",
            "\0\u{FFFF}",
        ] {
            let stored = encode(text);
            assert!(!stored.contains('\0'), "{text:?}");
            assert_eq!(decode(stored.into_owned()), text, "{text:?}");
        }
    }

    #[test]
    fn a_foreign_escape_is_read_unchanged() {
        assert_eq!(decode("x\u{FFFF}y".into()), "x\u{FFFF}y");
        assert_eq!(decode("x\u{FFFF}".into()), "x\u{FFFF}");
    }
}
