//! What each waiting-room admission did, on Redis (`lua/admission_step.lua`). The booking an
//! admission makes is recorded by `book.lua` / `confirm_hold.lua` in the same hash, inside the
//! booking's own script: the record shares the booking hash tag for exactly that.

use chrono::{DateTime, Utc};

use super::codec::{at, status_reply, uint};
use super::refusal::{refusal, Asked};
use super::RedisStore;
use crate::domain::room::TicketId;
use crate::store::{StoreError, IDEMPOTENCY_TTL_SECS};

impl RedisStore {
    pub(super) async fn count_admission_step(
        &self,
        ticket: &TicketId,
        limit: u32,
        _now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let what = "admission step";
        let mut invocation = self.scripts.admission_step.key(self.keys.admission(ticket));
        invocation.arg(limit).arg(IDEMPOTENCY_TTL_SECS);
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        match status.as_str() {
            "OK" => uint(what, at(what, &items, 0)?),
            refused => Err(refusal(
                what,
                refused,
                &items,
                &Asked {
                    limit: Some(limit),
                    ..Asked::default()
                },
            )),
        }
    }
}
