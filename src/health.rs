//! `slotd health`: a grpc.health.v1 client for container health checks (Docker's HEALTHCHECK;
//! the image has no shell and no other probe). One `Check` call, plaintext or TLS; SERVING is
//! the only healthy answer. Connection failures, timeouts, NOT_SERVING, SERVICE_UNKNOWN (an
//! unknown `--service`) and UNKNOWN are all unhealthy, each with a line saying which.

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::config::HealthArgs;

/// The answer of one health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The status the server reported (SERVING is the only healthy one).
    Status(ServingStatus),
    /// No status: the reason (connection refused, timeout, TLS, bad address...).
    Failed(String),
}

impl Verdict {
    pub fn healthy(&self) -> bool {
        *self == Verdict::Status(ServingStatus::Serving)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Status(status) => f.write_str(status.as_str_name()),
            Verdict::Failed(why) => write!(f, "unhealthy: {why}"),
        }
    }
}

/// Checks `args.service` on `args.addr` once, within `args.timeout_secs`.
pub async fn check(args: &HealthArgs) -> Verdict {
    let limit = Duration::from_secs(args.timeout_secs);
    match tokio::time::timeout(limit, ask(args, limit)).await {
        Ok(Ok(status)) => Verdict::Status(status),
        Ok(Err(why)) => Verdict::Failed(why),
        Err(_) => Verdict::Failed(format!("no answer from {} within {limit:?}", args.addr)),
    }
}

async fn ask(args: &HealthArgs, limit: Duration) -> Result<ServingStatus, String> {
    let mut endpoint = Endpoint::from_shared(args.addr.clone())
        .map_err(|e| format!("--addr {}: {e}", args.addr))?
        .connect_timeout(limit)
        .timeout(limit);
    let tls = args.addr.starts_with("https://");
    if !tls && !args.addr.starts_with("http://") {
        return Err(format!(
            "--addr {}: must start with http:// or https://",
            args.addr
        ));
    }
    if !tls && (args.ca_cert.is_some() || args.tls_domain.is_some()) {
        return Err("--ca-cert and --tls-domain need an https:// --addr".into());
    }
    if tls {
        let mut config = ClientTlsConfig::new();
        match &args.ca_cert {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("--ca-cert {}: {e}", path.display()))?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            None => {
                return Err(
                    "https:// needs --ca-cert (the CA that signed the server certificate)".into(),
                )
            }
        }
        if let Some(domain) = &args.tls_domain {
            config = config.domain_name(domain.clone());
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| format!("tls: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect {}: {}", args.addr, error_chain(&e)))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await;
    match response {
        Ok(r) => {
            Ok(ServingStatus::try_from(r.into_inner().status).unwrap_or(ServingStatus::Unknown))
        }
        // grpc.health.v1: an unknown service is NOT_FOUND.
        Err(status) if status.code() == tonic::Code::NotFound => Ok(ServingStatus::ServiceUnknown),
        Err(status) => Err(format!(
            "Check answered {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

/// An error with its sources ("transport error: tcp connect error: Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
