//! One tracing registry: `EnvFilter` (RUST_LOG, default info), human or JSON logs, and — when
//! spans are exported — an OpenTelemetry layer exporting them over OTLP/gRPC in batches.
//!
//! What is exported where follows the OpenTelemetry SDK environment conventions
//! ([`TelemetryPlan::resolve`]); an explicit slotd setting (`telemetry.*`, `--otlp-endpoint`)
//! wins only when it is set:
//! - endpoint: `telemetry.otlp_endpoint`, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
//!   `OTEL_EXPORTER_OTLP_ENDPOINT`, else (only with `OTEL_TRACES_EXPORTER=otlp`) the spec's
//!   default `http://localhost:4317`. Without any of them nothing is exported. OTLP/gRPC uses an
//!   endpoint as is: no `/v1/traces` is appended to the generic one (that rule is OTLP/HTTP's), and
//!   a path is ignored (a gRPC target is scheme, host and port). A bare `host:port` is `https`
//!   unless `OTEL_EXPORTER_OTLP_TRACES_INSECURE` / `OTEL_EXPORTER_OTLP_INSECURE` is `true`.
//! - `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`: slotd speaks `grpc`
//!   only; any other value stops it at start (it would send gRPC to an HTTP port).
//! - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn export off.
//! - resource: `telemetry.service_name`, else `OTEL_SERVICE_NAME`, else `service.name` from
//!   `OTEL_RESOURCE_ATTRIBUTES`, else `slotd`; every other `OTEL_RESOURCE_ATTRIBUTES` pair
//!   (percent-decoded; a malformed list is discarded whole and reported, as the spec says), and
//!   `service.version` = slotd's version unless that list names one.
//!
//! Empty variables count as unset (the spec's rule). JSON log lines inside a span carry that
//! span's `trace_id` and `span_id` (hex, as in `traceparent`) whenever spans are exported.
//!
//! Spans: one per RPC (`api::middleware`, parent = the caller's `traceparent`), Redis calls as
//! children named after the script or command (`store::redis::conn`). `Telemetry::shutdown`
//! flushes the batch on exit; it runs the blocking shutdown in `spawn_blocking`, because calling
//! it on a runtime worker can deadlock with the exporter's own tasks (opentelemetry-rust#2583).

use std::fmt;
use std::io::IsTerminal as _;

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TelemetrySettings;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A telemetry setting that cannot be used, naming the variable or key it came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TelemetryError(String);

/// The service name when neither slotd's configuration nor the environment names one.
pub const DEFAULT_SERVICE_NAME: &str = "slotd";
/// The OTLP/gRPC endpoint of the specification, used when `OTEL_TRACES_EXPORTER=otlp` names no
/// endpoint.
pub const DEFAULT_OTLP_GRPC_ENDPOINT: &str = "http://localhost:4317";

/// What `init` sets up, resolved from slotd's settings and the OpenTelemetry variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryPlan {
    pub log_format: LogFormat,
    /// The OTLP/gRPC endpoint spans go to; none = no export.
    pub endpoint: Option<String>,
    /// Where `endpoint` came from (`telemetry.otlp_endpoint`, a variable name, or `default`).
    pub endpoint_source: &'static str,
    pub service_name: String,
    /// Resource attributes besides `service.name`, in the order given.
    pub resource: Vec<(String, String)>,
    /// Problems the spec says to report and carry on from (logged once logging is up).
    pub warnings: Vec<String>,
}

/// An environment variable, empty counting as unset.
fn var(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The first of `names` that is set, with its name.
fn first_var(
    env: &dyn Fn(&str) -> Option<String>,
    names: &[&'static str],
) -> Option<(&'static str, String)> {
    names
        .iter()
        .find_map(|name| var(env, name).map(|v| (*name, v)))
}

impl TelemetryPlan {
    /// Resolves the plan from `settings` and the environment `env` (a lookup, so tests pass
    /// their own). Errors name the key or variable.
    pub fn resolve(
        settings: &TelemetrySettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, TelemetryError> {
        let mut warnings = Vec::new();
        let disabled = match var(env, "OTEL_SDK_DISABLED") {
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                warnings.push(format!(
                    "OTEL_SDK_DISABLED={v:?} is neither true nor false: taken as false"
                ));
                false
            }
            None => false,
        };
        let exporter = match var(env, "OTEL_TRACES_EXPORTER") {
            None => None,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "otlp" => Some(true),
                "none" => Some(false),
                _ => {
                    return Err(TelemetryError(format!(
                        "OTEL_TRACES_EXPORTER={v:?}: slotd exports traces with `otlp` (OTLP/gRPC) or not at all (`none`)"
                    )))
                }
            },
        };
        if let Some((name, protocol)) = first_var(
            env,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ],
        ) {
            if protocol != "grpc" {
                return Err(TelemetryError(format!(
                    "{name}={protocol:?}: slotd exports OTLP over gRPC only (`grpc`, usually port 4317)"
                )));
            }
        }
        let insecure = first_var(
            env,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
                "OTEL_EXPORTER_OTLP_INSECURE",
            ],
        )
        .is_some_and(|(_, v)| v.eq_ignore_ascii_case("true"));
        let given = match &settings.otlp_endpoint {
            Some(e) => Some(("telemetry.otlp_endpoint", e.clone())),
            None => first_var(
                env,
                &[
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                ],
            ),
        };
        let (endpoint, endpoint_source) = match (disabled, exporter, given) {
            (true, _, _) | (_, Some(false), _) => (None, "off"),
            (false, _, Some((source, raw))) => (Some(grpc_target(source, &raw, insecure)?), source),
            (false, Some(true), None) => (Some(DEFAULT_OTLP_GRPC_ENDPOINT.to_owned()), "default"),
            (false, None, None) => (None, "off"),
        };

        let mut resource = match var(env, "OTEL_RESOURCE_ATTRIBUTES") {
            Some(raw) => match parse_resource_attributes(&raw) {
                Ok(pairs) => pairs,
                Err(e) => {
                    warnings.push(format!("OTEL_RESOURCE_ATTRIBUTES discarded: {e}"));
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let from_attributes = resource
            .iter()
            .rev()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.clone());
        resource.retain(|(k, _)| k != "service.name");
        if !resource.iter().any(|(k, _)| k == "service.version") {
            resource.push((
                "service.version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ));
        }
        let service_name = settings
            .service_name
            .clone()
            .or_else(|| var(env, "OTEL_SERVICE_NAME"))
            .or(from_attributes)
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        Ok(Self {
            log_format: settings.log_format,
            endpoint,
            endpoint_source,
            service_name,
            resource,
            warnings,
        })
    }
}

/// An OTLP/gRPC target from an endpoint setting: `http(s)://host[:port]`, any path dropped (a
/// gRPC target has none; `/v1/traces` is OTLP/HTTP's), a bare `host:port` made `https` or, when
/// insecure, `http`.
fn grpc_target(source: &str, raw: &str, insecure: bool) -> Result<String, TelemetryError> {
    let bad = |why: &str| TelemetryError(format!("{source}={raw:?}: {why}"));
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            if scheme != "http" && scheme != "https" {
                return Err(bad("must be an http:// or https:// URL (or host:port)"));
            }
            (scheme, rest)
        }
        None => (if insecure { "http" } else { "https" }.to_owned(), raw),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(bad("needs a host (and optionally a port), no user info"));
    }
    let target = format!("{scheme}://{authority}");
    target
        .parse::<http::Uri>()
        .map_err(|e| bad(&format!("not a URL: {e}")))?;
    Ok(target)
}

/// `key1=value1,key2=value2` (W3C Baggage octets, values percent-encoded) into pairs.
pub fn parse_resource_attributes(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for item in raw.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("`{item}` has an empty key"));
        }
        let value = percent_decode(value.trim())
            .ok_or_else(|| format!("the value of `{key}` is not valid percent-encoded UTF-8"))?;
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Holds the span exporter until `shutdown`.
#[must_use = "call shutdown() on exit to flush spans"]
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || {
            let _ = provider.force_flush();
            provider.shutdown()
        })
        .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("slotd: telemetry shutdown: {e}"),
            Err(e) => eprintln!("slotd: telemetry shutdown task: {e}"),
        }
    }
}

/// The resource of `plan`: service name, the `OTEL_RESOURCE_ATTRIBUTES` pairs and the SDK's own
/// `telemetry.sdk.*` attributes.
pub fn resource(plan: &TelemetryPlan) -> Resource {
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(
            plan.resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(plan.service_name.clone())
        .build()
}

/// A tracer provider exporting to `endpoint` over OTLP/gRPC. Must run inside a tokio runtime.
pub fn otlp_provider(
    endpoint: &str,
    resource: Resource,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError(format!("otlp exporter {endpoint}: {e}")))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The JSON event format plus `trace_id` / `span_id` of the current span when it has an
/// OpenTelemetry context (spans exported), so log lines join their trace.
struct JsonWithTraceIds(Format<Json>);

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let ids = if ctx.lookup_current().is_some() {
            let cx = tracing::Span::current().context();
            let span = cx.span();
            let sc = span.span_context();
            sc.is_valid()
                .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
        } else {
            None
        };
        match (ids, line.trim_end().strip_suffix('}')) {
            (Some((trace_id, span_id)), Some(open)) => writeln!(
                writer,
                "{open},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            _ => writer.write_str(&line),
        }
    }
}

/// Text log lines without colours (a file, a pipe, a log collector): the text of
/// tracing-subscriber's default format with ANSI off — `<RFC 3339 µs>Z <LEVEL> <span>{<fields>}:
/// <target>: <message> <fields>` — written straight, where the default formatter still runs
/// every piece through an (empty) colour style and its own clock formatting: ~3,700 of the
/// ~11,300 instructions of a booking's log line (benches/README.md §25). Terminals keep the
/// default, with colours.
struct PlainText;

impl<S, N> FormatEvent<S, N> for PlainText
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        writer.write_str(&now)?;
        writer.write_str(match *event.metadata().level() {
            tracing::Level::TRACE => " TRACE ",
            tracing::Level::DEBUG => " DEBUG ",
            tracing::Level::INFO => "  INFO ",
            tracing::Level::WARN => "  WARN ",
            tracing::Level::ERROR => " ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions
                    .get::<tracing_subscriber::fmt::FormattedFields<N>>()
                    .filter(|f| !f.is_empty())
                {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            writer.write_char(' ')?;
        }
        writer.write_str(event.metadata().target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The target and name of the span around every store call (`store::redis::conn`).
const STORE_CALL_SPAN: (&str, &str) = ("slotd::store::redis::conn", "redis");

/// The log lines' layer: `format` to `writer`, with ANSI colours only when `ansi` (stdout is a
/// terminal: a file, a pipe or a log collector gets plain text, and no colour codes are
/// formatted for it: they were a tenth of slotd's instructions per booking, benches/README.md
/// §20). It does not see the store-call spans: no line is logged inside one (a line's span
/// context is the RPC's, which names the method), and formatting their fields for nothing cost
/// every Redis call; with spans exported they still go to the OpenTelemetry layer, and without
/// export nobody wants them, so they are not even created.
fn log_layer<S, W>(format: LogFormat, ansi: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let logged = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.is_span() && (meta.target(), meta.name()) == STORE_CALL_SPAN)
    });
    match format {
        LogFormat::Text if ansi => tracing_subscriber::fmt::layer()
            .with_ansi(true)
            .with_writer(writer)
            .fmt_fields(DefaultFields::new())
            .with_filter(logged)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(writer)
            .fmt_fields(DefaultFields::new())
            .event_format(PlainText)
            .with_filter(logged)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(writer)
            .fmt_fields(JsonFields::new())
            .event_format(JsonWithTraceIds(tracing_subscriber::fmt::format().json()))
            .with_filter(logged)
            .boxed(),
    }
}

/// Installs the process-wide subscriber from `settings` and the process environment (a second
/// call, e.g. in tests, keeps the first subscriber).
pub fn init(settings: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
    let plan = TelemetryPlan::resolve(settings, &|name| std::env::var(name).ok())?;
    init_plan(&plan)
}

/// Whether spans go to an OTLP exporter (set once by `init_plan`).
static EXPORTING_SPANS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported: fields only a span exporter reads (an RPC's status code, which
/// no log line carries: the call's lines are written before it ends) are recorded only then,
/// since the log layer formats every recorded field (~3,000 instructions per call, benches/README.md §25).
pub fn exporting_spans() -> bool {
    EXPORTING_SPANS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Installs the process-wide subscriber for `plan`.
pub fn init_plan(plan: &TelemetryPlan) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = log_layer(
        plan.log_format,
        std::io::stdout().is_terminal(),
        std::io::stdout,
    );
    let provider = match &plan.endpoint {
        Some(endpoint) => Some(otlp_provider(endpoint, resource(plan))?),
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("slotd")));
    let exporting = otel.is_some();
    if tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(filter)
        .try_init()
        .is_ok()
    {
        EXPORTING_SPANS.store(exporting, std::sync::atomic::Ordering::Relaxed);
    }
    for warning in &plan.warnings {
        tracing::warn!("{warning}");
    }
    if let Some(endpoint) = &plan.endpoint {
        tracing::info!(
            endpoint = %endpoint,
            from = plan.endpoint_source,
            service = %plan.service_name,
            "exporting spans over OTLP/gRPC"
        );
    }
    Ok(Telemetry { provider })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Log lines written into memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// What `format` logs (with `ansi`) for a line inside a store call inside an RPC.
    fn logged(format: LogFormat, ansi: bool) -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry().with(log_layer(format, ansi, out.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let rpc = tracing::info_span!(
                "rpc",
                rpc.method = "slotd.v1.BookingService/BookAppointment"
            );
            let _rpc = rpc.enter();
            let store = tracing::info_span!(
                target: "slotd::store::redis::conn",
                "redis",
                otel.name = "book"
            );
            let _store = store.enter();
            tracing::info!(confirmation = "ABC123", "appointment booked");
        });
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        text
    }

    #[test]
    fn log_lines_for_a_file_or_pipe_carry_no_colour_codes_and_no_store_call_spans() {
        let text = logged(LogFormat::Text, false);
        assert!(text.contains("appointment booked"), "{text}");
        assert!(text.contains("confirmation=\"ABC123\""), "{text}");
        // The line's context is the RPC, which names the method; the store call is left out.
        assert!(
            text.contains("rpc{rpc.method=\"slotd.v1.BookingService/BookAppointment\"}"),
            "{text}"
        );
        assert!(!text.contains("redis{"), "{text}");
        assert!(!text.contains('\u{1b}'), "no ANSI escape codes: {text:?}");
        // On a terminal the colours stay.
        assert!(logged(LogFormat::Text, true).contains('\u{1b}'));

        let json = logged(LogFormat::Json, false);
        let line: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON line");
        assert_eq!(line["fields"]["message"], "appointment booked", "{line}");
        assert_eq!(line["span"]["name"], "rpc", "{line}");
        assert!(!json.contains("\"redis\""), "{json}");
        assert!(!json.contains('\u{1b}'), "{json:?}");
    }

    #[test]
    fn plain_text_lines_are_the_default_formats_text_without_colours() {
        // The same events through tracing-subscriber's own formatter with ANSI off.
        let events =
            |out: &Captured, layer: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>| {
                tracing::subscriber::with_default(
                    tracing_subscriber::registry().with(layer),
                    || {
                        let rpc =
                            tracing::info_span!("rpc", otel.kind = "server", rpc.method = "m/X");
                        let _rpc = rpc.enter();
                        let inner = tracing::info_span!("inner");
                        let _inner = inner.enter();
                        tracing::info!(confirmation = "ABC123", seats = 2, "appointment booked");
                        tracing::warn!(error = %"a b", "store unavailable");
                    },
                );
                let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
                // Without the timestamps (they differ), each line as written.
                text.lines()
                    .map(|l| {
                        l.split_once(' ')
                            .map(|(_, rest)| rest.to_owned())
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
            };
        let ours = Captured::default();
        let theirs = Captured::default();
        let plain = events(&ours, log_layer(LogFormat::Text, false, ours.clone()));
        let default = events(
            &theirs,
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(theirs.clone())
                .boxed(),
        );
        assert_eq!(plain.len(), 2, "{plain:?}");
        assert_eq!(plain, default);
        let line = String::from_utf8(ours.0.lock().expect("lock").clone()).expect("utf-8");
        let stamp = line.split(' ').next().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok() && stamp.ends_with('Z'),
            "{line}"
        );
    }

    fn plan(
        settings: &TelemetrySettings,
        vars: &[(&str, &str)],
    ) -> Result<TelemetryPlan, TelemetryError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TelemetryPlan::resolve(settings, &|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn attr<'a>(p: &'a TelemetryPlan, key: &str) -> Option<&'a str> {
        p.resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn nothing_set_exports_nothing_as_slotd() {
        let p = plan(&TelemetrySettings::default(), &[]).expect("plan");
        assert_eq!(p.endpoint, None);
        assert_eq!(p.service_name, "slotd");
        assert_eq!(attr(&p, "service.version"), Some(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn the_traces_endpoint_wins_over_the_generic_one_and_both_are_used_as_is_for_grpc() {
        let s = TelemetrySettings::default();
        let p = plan(
            &s,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317")],
        )
        .expect("plan");
        assert_eq!(p.endpoint.as_deref(), Some("http://generic:4317"));
        assert_eq!(p.endpoint_source, "OTEL_EXPORTER_OTLP_ENDPOINT");
        let p = plan(
            &s,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "https://traces:4317/v1/traces",
                ),
            ],
        )
        .expect("plan");
        // gRPC: no /v1/traces appended to the generic endpoint, and a path is no gRPC target.
        assert_eq!(p.endpoint.as_deref(), Some("https://traces:4317"));
        // Empty counts as unset.
        let p = plan(
            &s,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317/"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""),
            ],
        )
        .expect("plan");
        assert_eq!(p.endpoint.as_deref(), Some("http://generic:4317"));
        // Bare host:port: secure unless told otherwise.
        let p = plan(&s, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]).expect("plan");
        assert_eq!(p.endpoint.as_deref(), Some("https://collector:4317"));
        let p = plan(
            &s,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
                ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
            ],
        )
        .expect("plan");
        assert_eq!(p.endpoint.as_deref(), Some("http://collector:4317"));
    }

    #[test]
    fn explicit_configuration_wins_only_when_it_is_set() {
        let env = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:4317"),
            ("OTEL_SERVICE_NAME", "from-env"),
        ];
        let explicit = TelemetrySettings {
            otlp_endpoint: Some("http://config:4317".into()),
            service_name: Some("from-config".into()),
            ..TelemetrySettings::default()
        };
        let p = plan(&explicit, &env).expect("plan");
        assert_eq!(p.endpoint.as_deref(), Some("http://config:4317"));
        assert_eq!(p.endpoint_source, "telemetry.otlp_endpoint");
        assert_eq!(p.service_name, "from-config");
        let p = plan(&TelemetrySettings::default(), &env).expect("plan");
        assert_eq!(p.endpoint.as_deref(), Some("http://env:4317"));
        assert_eq!(p.service_name, "from-env");
    }

    #[test]
    fn resource_attributes_are_percent_decoded_and_service_name_wins_over_them() {
        let s = TelemetrySettings::default();
        let p = plan(
            &s,
            &[(
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=attr-name, deployment.environment.name=prod%20eu,service.version=9",
            )],
        )
        .expect("plan");
        assert_eq!(p.service_name, "attr-name");
        assert_eq!(attr(&p, "deployment.environment.name"), Some("prod eu"));
        assert_eq!(attr(&p, "service.version"), Some("9"));
        assert_eq!(attr(&p, "service.name"), None, "kept apart as service_name");
        let p = plan(
            &s,
            &[
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=attr-name"),
                ("OTEL_SERVICE_NAME", "env-name"),
            ],
        )
        .expect("plan");
        assert_eq!(p.service_name, "env-name");
        // Malformed: discarded whole, reported, and slotd carries on.
        let p = plan(
            &s,
            &[("OTEL_RESOURCE_ATTRIBUTES", "team=a,broken,zone=%zz")],
        )
        .expect("plan");
        assert_eq!(attr(&p, "team"), None);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    }

    #[test]
    fn switches_and_protocols() {
        let s = TelemetrySettings::default();
        let e = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        assert_eq!(
            plan(&s, &[e, ("OTEL_SDK_DISABLED", "true")])
                .expect("plan")
                .endpoint,
            None
        );
        assert_eq!(
            plan(&s, &[e, ("OTEL_TRACES_EXPORTER", "none")])
                .expect("plan")
                .endpoint,
            None
        );
        assert_eq!(
            plan(&s, &[("OTEL_TRACES_EXPORTER", "otlp")])
                .expect("plan")
                .endpoint
                .as_deref(),
            Some(DEFAULT_OTLP_GRPC_ENDPOINT)
        );
        let err =
            plan(&s, &[e, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).expect_err("http");
        assert!(
            err.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
            "{err}"
        );
        plan(&s, &[e, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")]).expect("grpc is fine");
        let err = plan(&s, &[("OTEL_TRACES_EXPORTER", "zipkin")]).expect_err("zipkin");
        assert!(err.to_string().contains("OTEL_TRACES_EXPORTER"), "{err}");
        let err =
            plan(&s, &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x:1")]).expect_err("ftp");
        assert!(
            err.to_string()
                .contains("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            "{err}"
        );
    }
}
