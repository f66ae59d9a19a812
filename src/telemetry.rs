//! One tracing registry: `EnvFilter` (RUST_LOG, default info), human or JSON logs, and — when an
//! OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` / `telemetry.otlp_endpoint`) — an
//! OpenTelemetry layer exporting spans over OTLP/gRPC in batches.
//!
//! Spans: one per RPC (`api::middleware`, parent = the caller's `traceparent`), Redis calls as
//! children named after the script or command (`store::redis::conn`). `Telemetry::shutdown`
//! flushes the batch on exit; it runs the blocking shutdown in `spawn_blocking`, because calling
//! it on a runtime worker can deadlock with the exporter's own tasks (opentelemetry-rust#2583).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
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

#[derive(Debug, thiserror::Error)]
#[error("otlp exporter: {0}")]
pub struct TelemetryError(String);

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

/// A tracer provider exporting to `endpoint` over OTLP/gRPC. Must run inside a tokio runtime.
pub fn otlp_provider(
    endpoint: &str,
    service_name: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build())
}

/// Installs the process-wide subscriber (a second call, e.g. in tests, keeps the first).
pub fn init(settings: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match settings.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
    };
    let provider = match &settings.otlp_endpoint {
        Some(endpoint) => Some(otlp_provider(endpoint, &settings.service_name)?),
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("slotd")));
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(filter)
        .try_init();
    Ok(Telemetry { provider })
}
