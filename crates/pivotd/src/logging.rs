//! Logs: JSON lines when stderr is not a terminal, human lines when it is — or as configured.
//!
//! A JSON line is one flat object: `timestamp`, `level`, `target`, the event's fields
//! (`message` among them), then the fields of every span it happened in — so a call's
//! `call_id`, `account_id` and `node` sit at the top level, where log stores index and filter
//! them, instead of nested under a `span` object as tracing-subscriber's JSON format puts them.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogConfig;

/// Installs the process's subscriber; a second call (tests) keeps the first.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_env("PIVOT_LOG")
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if config.format.is_json(std::io::stderr().is_terminal()) {
        builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .try_init()
    } else {
        builder.try_init()
    };
    // Already installed: keep the first subscriber.
    drop(result);
}

/// One flat JSON object per event, span fields lifted to the top level (innermost span wins a
/// name clash; the event's own fields win over any span's).
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp()));
        let meta = event.metadata();
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        event.record(&mut FieldsInto(&mut line));
        if let Some(scope) = ctx.event_scope() {
            // Leaf first, so an inner span's field is inserted before an outer one's.
            for span in scope {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                // JsonFields stores each span's fields as a JSON object.
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    for (name, value) in fields {
                        line.entry(name).or_insert(value);
                    }
                }
            }
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Records an event's fields into a JSON object, numbers and booleans as themselves.
struct FieldsInto<'a>(&'a mut Map<String, Value>);

impl Visit for FieldsInto<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

/// The time as tracing-subscriber's own lines write it (RFC 3339, UTC).
fn timestamp() -> String {
    let mut text = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut text));
    text
}
