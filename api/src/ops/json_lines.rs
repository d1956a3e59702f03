//! The JSON log line: `{"timestamp","level","message",<fields>,"target"[,"span"]}`, the shape of
//! tracing-subscriber's flattened JSON format, built in a buffer of its own.
//!
//! tracing-subscriber's own JSON format goes through serde with an adapter that checks every
//! piece it writes for UTF-8, and formats the timestamp into a new string first. The access log
//! writes a line per request, so its formatting is part of every request's cost: here the line
//! is assembled by plain appends to a reused string and handed on in one piece.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// One event as one JSON object per line. Spans' fields must be formatted by `JsonFields`
/// (objects), as the current span's are copied into `"span"`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

thread_local! {
    /// Each thread's line, kept between events so that a line costs no allocation.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        let extensions = span.as_ref().map(|span| span.extensions());
        let span = span
            .as_ref()
            .zip(extensions.as_ref())
            .map(|(span, extensions)| {
                let fields = extensions
                    .get::<FormattedFields<N>>()
                    .map_or("", |fields| object_members(&fields.fields));
                (span.name(), fields)
            });
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                write_line(&mut line, event, span);
                writer.write_str(&line)
            }
            // An event logged while this thread formats another (from a field's Debug).
            Err(_) => {
                let mut line = String::new();
                write_line(&mut line, event, span);
                writer.write_str(&line)
            }
        })
    }
}

/// The whole line of `event`, newline included; `span` is the current span's name and fields.
fn write_line(line: &mut String, event: &Event<'_>, span: Option<(&str, &str)>) {
    // A record from the `log` crate names its real target and level here.
    let normalized = event.normalized_metadata();
    let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
    line.push_str("{\"timestamp\":\"");
    // Writing to a String cannot fail.
    let _ = write!(
        line,
        "{}",
        humantime::format_rfc3339_micros(SystemTime::now())
    );
    line.push_str("\",\"level\":\"");
    line.push_str(metadata.level().as_str());
    line.push('"');
    event.record(&mut FieldWriter { line: &mut *line });
    line.push_str(",\"target\":");
    push_string(line, metadata.target());
    if let Some((name, fields)) = span {
        line.push_str(",\"span\":{");
        if !fields.is_empty() {
            line.push_str(fields);
            line.push(',');
        }
        line.push_str("\"name\":");
        push_string(line, name);
        line.push('}');
    }
    line.push_str("}\n");
}

/// The members of a JSON object's text, without the braces: `"a":1,"b":2` of `{"a":1,"b":2}`.
fn object_members(object: &str) -> &str {
    object
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_default()
        .trim()
}

/// Appends each field as `,"name":value`.
struct FieldWriter<'a> {
    line: &'a mut String,
}

impl FieldWriter<'_> {
    /// Starts the field's member; false for a field that is not shown.
    fn name(&mut self, field: &Field) -> bool {
        // The `log` crate's own metadata, already shown as the target.
        if field.name().starts_with("log.") {
            return false;
        }
        self.line.push_str(",\"");
        push_escaped(self.line, field.name());
        self.line.push_str("\":");
        true
    }
}

impl Visit for FieldWriter<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.name(field) {
            if value.is_finite() {
                self.line.push_str(ryu::Buffer::new().format_finite(value));
            } else {
                self.line.push_str("null");
            }
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.name(field) {
            self.line.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.name(field) {
            self.line.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.name(field) {
            self.line.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.name(field) {
            push_string(self.line, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.name(field) {
            self.line.push('"');
            let _ = write!(Escaped(&mut *self.line), "{value:?}");
            self.line.push('"');
        }
    }
}

/// `text` as a JSON string, quotes included.
fn push_string(line: &mut String, text: &str) {
    line.push('"');
    push_escaped(line, text);
    line.push('"');
}

/// Appends `text`, escaping what JSON strings cannot hold as it is (quote, backslash, control
/// characters) as serde_json does; everything else is copied in runs.
fn push_escaped(line: &mut String, text: &str) {
    let mut plain_from = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        line.push_str(&text[plain_from..at]);
        if escape.is_empty() {
            let _ = write!(line, "\\u{byte:04x}");
        } else {
            line.push_str(escape);
        }
        plain_from = at + 1;
    }
    line.push_str(&text[plain_from..]);
}

/// A `fmt::Write` that escapes, for values only their `Debug` can write.
struct Escaped<'a>(&'a mut String);

impl Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        push_escaped(self.0, text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        push_string(&mut out, text);
        out
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for text in [
            "",
            "plain",
            "quote \" and backslash \\",
            "lines\nand\rtabs\t",
            "controls \u{0} \u{1} \u{8} \u{c} \u{1f} \u{7f}",
            "é ✓ 😀 and \u{2028}",
        ] {
            assert_eq!(
                escaped(text),
                serde_json::to_string(text).unwrap(),
                "{text:?}"
            );
        }
    }

    /// The lines a subscriber with this format writes while `emit` runs, parsed.
    fn lines_of(emit: impl FnOnce()) -> Vec<serde_json::Value> {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::fmt::format::JsonFields;
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let output = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_writer(move || output.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[test]
    fn an_event_is_one_json_object_with_its_fields_at_the_top() {
        let lines = lines_of(|| {
            let text = "a \"quoted\"\nline";
            tracing::warn!(target: "items_api::test", count = 3_u64, delta = -2_i64, ratio = 1.0, off = false, text, shown = %"x\ty", debugged = ?Some(1), "said {}", "this");
        });
        let [line] = lines.as_slice() else {
            panic!("{lines:?}")
        };
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], "items_api::test");
        assert_eq!(line["message"], "said this");
        assert_eq!(line["count"], 3);
        assert_eq!(line["delta"], -2);
        assert_eq!(line["ratio"].as_f64(), Some(1.0));
        assert!(line["ratio"].is_f64(), "1.0 stays a float: {line}");
        assert_eq!(line["off"], false);
        assert_eq!(line["text"], "a \"quoted\"\nline");
        assert_eq!(line["shown"], "x\ty");
        assert_eq!(line["debugged"], "Some(1)");
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(
            timestamp.len() == 27 && timestamp.ends_with('Z'),
            "{timestamp}"
        );
        assert!(line.get("span").is_none());
    }

    #[test]
    fn an_event_in_a_span_carries_the_spans_name_and_fields() {
        let lines = lines_of(|| {
            let span = tracing::info_span!("request", method = "GET", path = "/api/items");
            span.in_scope(|| tracing::info!(inner = 1, "inside"));
            tracing::info_span!("bare").in_scope(|| tracing::info!("inside bare"));
        });
        let [inside, bare] = lines.as_slice() else {
            panic!("{lines:?}")
        };
        assert_eq!(
            inside["span"],
            serde_json::json!({"method": "GET", "path": "/api/items", "name": "request"})
        );
        assert_eq!(inside["inner"], 1);
        assert_eq!(bare["span"], serde_json::json!({"name": "bare"}));
    }

    #[test]
    fn the_members_of_an_object_are_its_text_without_braces() {
        assert_eq!(
            object_members("{\"a\":1,\"b\":\"}\"}"),
            "\"a\":1,\"b\":\"}\""
        );
        assert_eq!(object_members("{}"), "");
        assert_eq!(object_members(""), "");
    }
}
