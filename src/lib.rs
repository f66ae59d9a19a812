//! slotd: 15-minute appointment slot inventory per post, category and date, booked atomically,
//! served over gRPC.
//!
//! Layers (data flows one way): `api` (wire) → `app` (use cases) → `domain` (pure rules) and
//! `store` (atomic operations). README.md's Layout section maps every file.
//! - `api`: the tonic services (one per file), their conversions and error mapping, operator
//!   auth (`api::auth`);
//! - `app`: the use cases, one file per concern (booking, holds, waitlist, inventory, calendar
//!   over the per-replica `availability` cache and feed, the waiting `room`);
//! - `domain`: types and rules with no I/O, the posts catalog, the clock, every refusal and its
//!   reason, the waiting room's credentials (`domain::admission`);
//! - `store`: the storage traits `Inventory` and `room::WaitingRoomStore`, and their two
//!   backends laid out alike, `memory` (embedded) and `redis` (production);
//! - wiring: `server` (gRPC server, health, shutdown), `tasks` (every background task, started
//!   in one place), `web` (gRPC-Web and the reference pages), `streams` and `limits` (per-client
//!   caps), `config`, `telemetry`, `metrics`, `health` (`slotd health`), `demo` (`--demo` data).

pub mod api;
pub mod app;
pub mod config;
pub mod demo;
pub mod domain;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod server;
pub mod store;
pub mod streams;
pub mod tasks;
pub mod telemetry;
pub mod web;
