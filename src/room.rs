//! Use cases of the waiting room: join, watch/poll, leave, operator settings, the admission
//! ticker every replica runs, and the gate booking calls pass through.
//!
//! The room's settings are cached per replica and refreshed by the ticker (every
//! `TICK_INTERVAL`), so a gate check costs no store call while the room is off; a change made on
//! one replica reaches the others within one tick.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::auth::admission::AdmissionKeys;
use crate::domain::clock::Clock;
use crate::domain::room::{ClientKey, RoomConfig, RoomStats, TicketId, TicketState, TicketView};
use crate::domain::Error;
use crate::store::room::WaitingRoom;
use crate::store::StoreError;

/// How often each replica runs an admission step and refreshes its copy of the settings.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// What a gate protects: calendar reads are gated only when the operator says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Booking,
    Calendar,
}

/// A ticket as its holder sees it, with an admission token when admitted.
#[derive(Debug, Clone)]
pub struct Seen {
    pub view: TicketView,
    pub token: Option<String>,
}

#[derive(Clone)]
pub struct Room {
    keys: AdmissionKeys,
    store: Arc<dyn WaitingRoom>,
    clock: Arc<dyn Clock>,
    config: Arc<RwLock<RoomConfig>>,
    /// Bumped after every admission step that admitted someone; watchers wake on it.
    admitted: Arc<watch::Sender<u64>>,
}

impl Room {
    pub fn new(keys: AdmissionKeys, store: Arc<dyn WaitingRoom>, clock: Arc<dyn Clock>) -> Self {
        let (admitted, _) = watch::channel(0);
        Self {
            keys,
            store,
            clock,
            config: Arc::new(RwLock::new(RoomConfig::default())),
            admitted: Arc::new(admitted),
        }
    }

    /// The signing keys (waitlist entry secrets are derived with them too).
    pub fn keys(&self) -> &AdmissionKeys {
        &self.keys
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn cached_config(&self) -> RoomConfig {
        *self.config.read().unwrap_or_else(|e| e.into_inner())
    }

    fn cache(&self, config: RoomConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// Wakes when an admission step admitted someone.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.admitted.subscribe()
    }

    fn seen(&self, view: TicketView) -> Seen {
        let token = match (view.state, view.session_expires_at) {
            (TicketState::Admitted, Some(expires)) => {
                Some(
                    self.keys
                        .mint(&view.id, &view.client_key, expires, self.now()),
                )
            }
            _ => None,
        };
        Seen { view, token }
    }

    pub async fn join(&self, client_key: &ClientKey) -> Result<(Seen, String), StoreError> {
        let view = self
            .store
            .join(client_key, &TicketId::generate(), self.now())
            .await?;
        let secret = self.keys.ticket_secret(&view.id);
        Ok((self.seen(view), secret))
    }

    /// The ticket, for the holder of its secret only; also the holder's heartbeat.
    pub async fn status(&self, ticket: &TicketId, secret: &str) -> Result<Seen, StoreError> {
        self.keys.check_ticket_secret(ticket, secret)?;
        let view = self.store.status(ticket, self.now()).await?;
        Ok(self.seen(view))
    }

    pub async fn leave(&self, ticket: &TicketId, secret: &str) -> Result<Seen, StoreError> {
        self.keys.check_ticket_secret(ticket, secret)?;
        let view = self
            .store
            .end(ticket, TicketState::Left, self.now())
            .await?;
        Ok(self.seen(view))
    }

    pub async fn revoke(&self, ticket: &TicketId) -> Result<(), StoreError> {
        self.store
            .end(ticket, TicketState::Revoked, self.now())
            .await
            .map(|_| ())
    }

    pub async fn configure(&self, config: &RoomConfig) -> Result<RoomConfig, StoreError> {
        let stored = self.store.configure(config, self.now()).await?;
        self.cache(stored);
        Ok(stored)
    }

    pub async fn stats(&self) -> Result<RoomStats, StoreError> {
        self.store.stats(self.now()).await
    }

    /// Lets a call through the room: Ok(None) when the room does not gate it, Ok(Some(ticket))
    /// for a valid token of a live admitted session.
    pub async fn gate(
        &self,
        token: Option<&str>,
        gate: Gate,
    ) -> Result<Option<TicketId>, StoreError> {
        let config = self.cached_config();
        if !config.enabled || (gate == Gate::Calendar && !config.gate_calendar) {
            return Ok(None);
        }
        let token = token.ok_or(Error::AdmissionRequired)?;
        let now = self.now();
        let (_, ticket) = self.keys.verify(token, now)?;
        match gate {
            // Reads may share a session; a booking call holds it until `settle`.
            Gate::Calendar => self.store.check_session(&ticket, now).await?,
            Gate::Booking => self.store.claim_session(&ticket, now).await?,
        }
        Ok(Some(ticket))
    }

    /// Ends a booking call that passed the gate with `ticket`: `completed` (it booked) ends
    /// the session, freeing its place under the active cap; otherwise the claim is given back
    /// and the session may be used again.
    pub async fn settle(&self, ticket: Option<TicketId>, completed: bool) {
        let Some(ticket) = ticket else {
            return;
        };
        let ended = if completed {
            self.store
                .end(&ticket, TicketState::Completed, self.now())
                .await
                .map(|_| ())
        } else {
            Ok(())
        };
        let outcome = ended.and(self.store.release_session(&ticket).await);
        if let Err(e) = outcome {
            // The call's outcome stands; the claim lapses after its lease (the session at its
            // duration) instead.
            tracing::warn!(error = %e, ticket = %ticket, completed, "could not settle the admitted session");
        }
    }

    /// One tick: refresh the settings, run an admission step, wake watchers if anyone got in.
    pub async fn tick(&self) -> Result<u64, StoreError> {
        let config = self.store.config().await?;
        self.cache(config);
        if !config.enabled {
            return Ok(0);
        }
        let admitted = self.store.advance(self.now()).await?;
        if admitted > 0 {
            self.admitted.send_modify(|n| *n += admitted);
        }
        Ok(admitted)
    }

    /// Ticks until the task is aborted. Errors (store down) are logged; the room fails closed:
    /// nobody is admitted until the store answers again, and nobody loses a place meanwhile
    /// beyond the waiter timeout counted in the store's own time.
    pub async fn run_ticker(self) {
        let mut failing = false;
        loop {
            match self.tick().await {
                Ok(_) if failing => {
                    tracing::info!("waiting room store answers again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "waiting room admission step failed");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(TICK_INTERVAL).await;
        }
    }
}
