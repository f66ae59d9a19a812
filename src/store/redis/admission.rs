//! What each waiting-room admission did, on Redis (`slotd:{T}:admission:<TICKET_ID>`). The
//! booking an admission makes is recorded by `book.lua` / `confirm_hold.lua` in the same hash, inside the
//! booking's own script: the record shares the booking hash tag for exactly that, and so do
//! the counted steps (holds, reschedules, cancellations, waitlist joins): each checks and counts its step in
//! its own script (`holds_lib.lua` `admission_step_refusal`, `count_admission_step`), which
//! answers `{"EXHAUSTED", limit}` once the steps are used up (`steps_exhausted`).

use crate::domain::Error;
use crate::store::{StoreError, ADMISSION_STEP_LIMIT};

/// A counted step's script answered `EXHAUSTED`: the admission made its `ADMISSION_STEP_LIMIT`
/// steps (the scripts are always called with that limit).
pub(super) fn steps_exhausted() -> StoreError {
    Error::AdmissionStepsExhausted {
        limit: ADMISSION_STEP_LIMIT,
    }
    .into()
}
