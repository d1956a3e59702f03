//! Hands the traces of the requests a write serves to the database, so the announcement of its
//! change carries them (migration 0005) and every replica that passes it on links to them.
//! Only while spans are exported: otherwise the statements go out exactly as they are written.

use std::borrow::Cow;

/// Where a statement takes the `set_config` call: a comment, so the statement as written runs
/// unchanged when nothing is traced.
pub(super) const MARK: &str = "/* traces */";

/// Links one announcement carries at most; its ids always come first.
const MAX_LINKED: usize = 32;

/// `statement` setting `items.traces` for its transaction to `traces`, passed as parameter
/// number `parameter`; `statement` itself when `traces` is `None`. `MARK` must stand where a
/// `FROM` item may be joined (`CROSS JOIN`) or listed (`UPDATE ... FROM`, `DELETE ... USING`),
/// written with its keyword: `join` is that keyword.
pub(super) fn statement<'a>(
    statement: &'a str,
    join: &str,
    parameter: usize,
    traces: Option<&str>,
) -> Cow<'a, str> {
    match traces {
        None => Cow::Borrowed(statement),
        Some(_) => Cow::Owned(statement.replace(
            MARK,
            &format!("{join} (SELECT set_config('items.traces', ${parameter}, true)) AS traced"),
        )),
    }
}

/// The distinct `traceparent`s of the requests a write serves, comma-separated; `None` when none
/// is traced.
pub(super) fn joined<'a>(traceparents: impl Iterator<Item = Option<&'a str>>) -> Option<String> {
    let mut linked: Vec<&str> = Vec::new();
    for traceparent in traceparents.flatten() {
        if linked.len() == MAX_LINKED {
            break;
        }
        if !linked.contains(&traceparent) {
            linked.push(traceparent);
        }
    }
    (!linked.is_empty()).then(|| linked.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untraced_statement_is_sent_as_written() {
        let sql = "DELETE FROM items /* traces */ WHERE id = $1";
        assert!(matches!(statement(sql, "USING", 2, None), Cow::Borrowed(same) if same == sql));
        assert_eq!(
            statement(sql, "USING", 2, Some("00-x")),
            "DELETE FROM items USING (SELECT set_config('items.traces', $2, true)) AS traced \
             WHERE id = $1"
        );
    }

    #[test]
    fn traces_are_joined_once_each_and_at_most_a_few() {
        assert_eq!(joined([None, None].into_iter()), None);
        assert_eq!(
            joined([Some("a"), None, Some("b"), Some("a")].into_iter()).as_deref(),
            Some("a,b")
        );
        let many: Vec<String> = (0..100).map(|n| n.to_string()).collect();
        let joined = joined(many.iter().map(|text| Some(text.as_str()))).unwrap();
        assert_eq!(joined.split(',').count(), MAX_LINKED);
    }
}
