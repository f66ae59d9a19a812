//! Waiting-room credentials, all HMAC-SHA256 under one key that every replica shares:
//! - the ticket secret, `HMAC(key, "slotd-ticket.v1." + ticket_id)`: derived, never stored, so a
//!   leaked ticket id is worth nothing and a rejoin can hand the same secret back;
//! - the admission token, `base64url(claims) "." base64url(HMAC(key, "slotd-admission.v1." +
//!   base64url(claims)))`, claims = ticket, client key, expiry, issue time and a unique id.
//!   Booking verifies signature and expiry locally, then asks the store whether the admitted
//!   session is still live (revocation, completion, expiry);
//! - the waitlist entry secret, `HMAC(key, "slotd-entry.v1." + entry_id)`, like a ticket's.
//!
//! Rotation: the current key signs everything issued from now on; up to `MAX_PREVIOUS_KEYS`
//! earlier keys still verify, so rolling a new key out (the old one kept as previous) drops
//! nobody's place, token or waitlist entry. Once nothing signed by an old key can be alive (the
//! longest of session duration, ended-ticket TTL and waitlist life), the old key is removed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain::room::{ClientKey, TicketId};
use crate::domain::types::format_instant;
use crate::domain::Error;

type HmacSha256 = Hmac<Sha256>;

/// Shortest admission key accepted at start.
pub const MIN_KEY_LEN: usize = 32;
/// Earlier keys that still verify.
pub const MAX_PREVIOUS_KEYS: usize = 4;
/// Longest token looked at; anything longer is refused before decoding.
const MAX_TOKEN_LEN: usize = 1024;

#[derive(Clone)]
pub struct AdmissionKeys {
    /// Signs; verifies first.
    key: Vec<u8>,
    /// Verify only, newest first.
    previous: Vec<Vec<u8>>,
}

impl std::fmt::Debug for AdmissionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdmissionKeys(..)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("admission key must be at least {MIN_KEY_LEN} characters")]
pub struct WeakKey {
    /// Which previous key (None: the current one).
    pub index: Option<usize>,
}

/// What an admission token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Ticket id.
    pub tid: String,
    /// Client key.
    pub ck: String,
    /// Expiry, ms since the epoch.
    pub exp: i64,
    /// Issued at, ms since the epoch.
    pub iat: i64,
    /// Unique token id.
    pub jti: String,
}

impl AdmissionKeys {
    pub fn new(key: &str) -> Result<Self, WeakKey> {
        Self::with_previous(key, &[])
    }

    /// `key` signs; `previous` (newest first) still verify.
    pub fn with_previous(key: &str, previous: &[String]) -> Result<Self, WeakKey> {
        if key.len() < MIN_KEY_LEN {
            return Err(WeakKey { index: None });
        }
        if let Some(index) = previous.iter().position(|k| k.len() < MIN_KEY_LEN) {
            return Err(WeakKey { index: Some(index) });
        }
        Ok(Self {
            key: key.as_bytes().to_vec(),
            previous: previous.iter().map(|k| k.as_bytes().to_vec()).collect(),
        })
    }

    /// A random key: only for the embedded store, whose tickets die with the process; replicas
    /// behind one address, and anything on Redis, need a configured shared key.
    pub fn random() -> Self {
        use rand::Rng;
        let key: [u8; 32] = rand::rng().random();
        Self {
            key: key.to_vec(),
            previous: Vec::new(),
        }
    }

    fn mac_with(key: &[u8], domain: &str, data: &[u8]) -> [u8; 32] {
        // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
        let mut mac = match HmacSha256::new_from_slice(key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes any key length"),
        };
        mac.update(domain.as_bytes());
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    fn mac(&self, domain: &str, data: &[u8]) -> [u8; 32] {
        Self::mac_with(&self.key, domain, data)
    }

    /// Whether `tag` is the MAC of `data` under the current or any previous key (each compared
    /// in constant time; the number of keys tried is not secret).
    fn verifies(&self, domain: &str, data: &[u8], tag: &[u8]) -> bool {
        std::iter::once(&self.key)
            .chain(&self.previous)
            .any(|key| bool::from(Self::mac_with(key, domain, data).as_slice().ct_eq(tag)))
    }

    fn verifies_secret(&self, domain: &str, id: &str, secret: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(secret) {
            Ok(tag) => self.verifies(domain, id.as_bytes(), &tag),
            Err(_) => false,
        }
    }

    pub fn ticket_secret(&self, ticket: &TicketId) -> String {
        URL_SAFE_NO_PAD.encode(self.mac("slotd-ticket.v1.", ticket.as_str().as_bytes()))
    }

    pub fn check_ticket_secret(&self, ticket: &TicketId, secret: &str) -> Result<(), Error> {
        if self.verifies_secret("slotd-ticket.v1.", ticket.as_str(), secret) {
            Ok(())
        } else {
            Err(Error::TicketSecretInvalid)
        }
    }

    /// What the room keeps of a client key: a keyed digest (43 characters), so neither the
    /// store nor an admission token (which carries it) gives away the key that rejoins a place.
    pub fn client_ref(&self, key: &ClientKey) -> ClientKey {
        let digest = URL_SAFE_NO_PAD.encode(self.mac("slotd-client.v1.", key.as_str().as_bytes()));
        ClientKey::stored(&digest).unwrap_or_else(|| key.clone())
    }

    /// The secret of a waitlist entry: derived, never stored, like a ticket's.
    pub fn entry_secret(&self, entry: &crate::domain::waitlist::EntryId) -> String {
        URL_SAFE_NO_PAD.encode(self.mac("slotd-entry.v1.", entry.as_str().as_bytes()))
    }

    pub fn check_entry_secret(
        &self,
        entry: &crate::domain::waitlist::EntryId,
        secret: &str,
    ) -> Result<(), Error> {
        if self.verifies_secret("slotd-entry.v1.", entry.as_str(), secret) {
            Ok(())
        } else {
            Err(Error::EntrySecretInvalid)
        }
    }

    pub fn mint(
        &self,
        ticket: &TicketId,
        client_key: &ClientKey,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> String {
        use rand::Rng;
        let jti: [u8; 12] = rand::rng().random();
        let claims = Claims {
            tid: ticket.to_string(),
            ck: client_key.to_string(),
            exp: expires_at.timestamp_millis(),
            iat: now.timestamp_millis(),
            jti: hex::encode(jti),
        };
        // Serialising a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let sig = URL_SAFE_NO_PAD.encode(self.mac("slotd-admission.v1.", payload.as_bytes()));
        format!("{payload}.{sig}")
    }

    /// The claims of a token this key signed that has not expired at `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<(Claims, TicketId), Error> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::AdmissionInvalid);
        }
        let (payload, sig) = token.split_once('.').ok_or(Error::AdmissionInvalid)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| Error::AdmissionInvalid)?;
        if !self.verifies("slotd-admission.v1.", payload.as_bytes(), &sig) {
            return Err(Error::AdmissionInvalid);
        }
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Error::AdmissionInvalid)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| Error::AdmissionInvalid)?;
        let ticket = TicketId::parse(&claims.tid).map_err(|_| Error::AdmissionInvalid)?;
        if claims.exp <= now.timestamp_millis() {
            let expired_at = DateTime::<Utc>::from_timestamp_millis(claims.exp)
                .map(format_instant)
                .unwrap_or_default();
            return Err(Error::AdmissionExpired { expired_at });
        }
        Ok((claims, ticket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn keys() -> AdmissionKeys {
        AdmissionKeys::new("0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn a_token_verifies_until_it_expires() {
        let k = keys();
        let now = Utc::now();
        let t = TicketId::generate();
        let ck = ClientKey::parse("sess-1.Kq7xZ2pLm9TvW4rN8sYb3c").unwrap();
        let token = k.mint(&t, &ck, now + Duration::minutes(10), now);
        let (claims, ticket) = k.verify(&token, now).unwrap();
        assert_eq!(
            (claims.ck.as_str(), ticket),
            ("sess-1.Kq7xZ2pLm9TvW4rN8sYb3c", t.clone())
        );
        assert!(matches!(
            k.verify(&token, now + Duration::minutes(10)),
            Err(Error::AdmissionExpired { .. })
        ));
        // Two tokens for one ticket differ by their unique id.
        assert_ne!(token, k.mint(&t, &ck, now + Duration::minutes(10), now));
    }

    #[test]
    fn forged_tampered_and_garbage_tokens_are_invalid() {
        let k = keys();
        let now = Utc::now();
        let t = TicketId::generate();
        let ck = ClientKey::parse("sess-1.Kq7xZ2pLm9TvW4rN8sYb3c").unwrap();
        let token = k.mint(&t, &ck, now + Duration::minutes(10), now);
        let other = AdmissionKeys::new("another-key-another-key-another-key").unwrap();
        assert_eq!(other.verify(&token, now), Err(Error::AdmissionInvalid));
        // Extend the expiry without the key.
        let (payload, sig) = token.split_once('.').unwrap();
        let mut claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims.exp += 3_600_000;
        let forged = format!(
            "{}.{sig}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(k.verify(&forged, now), Err(Error::AdmissionInvalid));
        for garbage in ["", ".", "abc", "a.b", &"x".repeat(5000), "\u{0}.\u{0}"] {
            assert_eq!(
                k.verify(garbage, now),
                Err(Error::AdmissionInvalid),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn ticket_secrets_bind_to_their_ticket() {
        let k = keys();
        let a = TicketId::generate();
        let b = TicketId::generate();
        let secret = k.ticket_secret(&a);
        assert!(k.check_ticket_secret(&a, &secret).is_ok());
        assert_eq!(
            k.check_ticket_secret(&b, &secret),
            Err(Error::TicketSecretInvalid)
        );
        assert_eq!(
            k.check_ticket_secret(&a, ""),
            Err(Error::TicketSecretInvalid)
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(AdmissionKeys::new("short").is_err());
        let e = AdmissionKeys::with_previous(
            "0123456789abcdef0123456789abcdef",
            &["another-key-another-key-another-key".into(), "short".into()],
        )
        .expect_err("a short previous key");
        assert_eq!(e.index, Some(1));
    }

    #[test]
    fn after_a_rotation_the_new_key_signs_and_the_previous_keys_still_verify() {
        let old = keys();
        let now = Utc::now();
        let t = TicketId::generate();
        let entry = crate::domain::waitlist::EntryId::generate();
        let ck = ClientKey::parse("sess-1.Kq7xZ2pLm9TvW4rN8sYb3c").unwrap();
        let old_token = old.mint(&t, &ck, now + Duration::minutes(10), now);
        let old_secret = old.ticket_secret(&t);
        let old_entry = old.entry_secret(&entry);

        let new_key = "a-brand-new-key-a-brand-new-key-0123";
        let rotated =
            AdmissionKeys::with_previous(new_key, &["0123456789abcdef0123456789abcdef".into()])
                .unwrap();
        assert!(rotated.verify(&old_token, now).is_ok());
        assert!(rotated.check_ticket_secret(&t, &old_secret).is_ok());
        assert!(rotated.check_entry_secret(&entry, &old_entry).is_ok());
        // New credentials are signed by the new key alone.
        let new_only = AdmissionKeys::new(new_key).unwrap();
        let new_token = rotated.mint(&t, &ck, now + Duration::minutes(10), now);
        assert!(new_only.verify(&new_token, now).is_ok());
        assert_eq!(old.verify(&new_token, now), Err(Error::AdmissionInvalid));
        assert!(new_only
            .check_ticket_secret(&t, &rotated.ticket_secret(&t))
            .is_ok());
        // Dropping the old key from the list ends what it signed.
        assert_eq!(
            new_only.verify(&old_token, now),
            Err(Error::AdmissionInvalid)
        );
        assert_eq!(
            new_only.check_ticket_secret(&t, &old_secret),
            Err(Error::TicketSecretInvalid)
        );
        assert_eq!(
            new_only.check_entry_secret(&entry, &old_entry),
            Err(Error::EntrySecretInvalid)
        );
    }
}
