//! Operator authentication: `authorization: Bearer <admin token>` on every AdminService call.
//! The token is compared by SHA-256 digest in constant time, so neither its length nor a prefix
//! leaks through timing. With no token configured, operator RPCs are refused outright.
//!
//! With TLS and `tls.client_ca`, a client certificate verified against that CA replaces the
//! token only when it is valid for one of `tls.operator_names` (its DNS subject alternative
//! names, matched as a TLS name check would), so not every certificate the CA ever issued is
//! full admin. Failed operator authentication is rate limited per client (`src/limits.rs`).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;

use crate::api::error::ApiError;

/// Shortest operator token accepted at start.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Clone)]
pub struct OperatorAuth {
    digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for OperatorAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorAuth")
            .field("configured", &self.digest.is_some())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("admin token must be at least {MIN_TOKEN_LEN} characters of visible ASCII")]
pub struct WeakToken;

impl OperatorAuth {
    pub fn new(token: Option<&str>) -> Result<Self, WeakToken> {
        let digest = match token {
            None => None,
            Some(t) if t.len() >= MIN_TOKEN_LEN && t.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(Sha256::digest(t.as_bytes()).into())
            }
            Some(_) => return Err(WeakToken),
        };
        Ok(Self { digest })
    }

    /// A fresh random token (for `--demo` without `--admin-token`).
    pub fn generate_token() -> String {
        use rand::Rng;
        let bytes: [u8; 24] = rand::rng().random();
        hex::encode(bytes)
    }

    pub fn check(&self, metadata: &MetadataMap) -> Result<(), ApiError> {
        let Some(expected) = &self.digest else {
            return Err(ApiError::Unauthenticated {
                detail: "operator RPCs are disabled: start slotd with --admin-token or SLOTD_ADMIN_TOKEN".into(),
            });
        };
        let header = metadata
            .get("authorization")
            .ok_or_else(|| ApiError::Unauthenticated {
                detail:
                    "missing authorization metadata: send `authorization: Bearer <admin token>`"
                        .into(),
            })?;
        let presented = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::Unauthenticated {
                detail: "authorization must be `Bearer <admin token>`".into(),
            })?;
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        if bool::from(digest.ct_eq(expected)) {
            Ok(())
        } else {
            Err(ApiError::Unauthenticated {
                detail: "admin token is not valid".into(),
            })
        }
    }
}

/// The DNS names (subject alternative names) an operator client certificate must be valid for.
#[derive(Debug, Clone, Default)]
pub struct OperatorNames(Vec<rustls_pki_types::ServerName<'static>>);

impl OperatorNames {
    /// Names already checked with `valid_name` (config validation); others are skipped.
    pub fn new(names: &[String]) -> Self {
        Self(
            names
                .iter()
                .filter(|n| Self::valid_name(n))
                .filter_map(|n| rustls_pki_types::ServerName::try_from(n.clone()).ok())
                .collect(),
        )
    }

    /// A DNS name without wildcards.
    pub fn valid_name(name: &str) -> bool {
        !name.contains('*')
            && matches!(
                rustls_pki_types::ServerName::try_from(name),
                Ok(rustls_pki_types::ServerName::DnsName(_))
            )
    }

    /// Whether `cert` (the client's end-entity certificate, already verified against the
    /// operator CA by rustls) is valid for one of the names.
    pub fn accepts(&self, cert: &rustls_pki_types::CertificateDer<'_>) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
            return false;
        };
        self.0
            .iter()
            .any(|name| cert.verify_is_valid_for_subject_name(name).is_ok())
    }
}
