//! Pure domain types and rules of slotd. Nothing here performs I/O or names tonic or Redis types:
//! `api` converts wire messages into these types, `store` persists them.

pub mod catalog;
pub mod clock;
pub mod error;
pub mod lifecycle;
pub mod room;
pub mod rules;
pub mod types;
pub mod waitlist;

pub use error::{Error, FieldViolation, Violations};
