//! slotd: 15-minute appointment slot inventory per post, category and date, booked atomically,
//! served over gRPC.
//!
//! Layers (data flows one way): `api` (wire) → `app` (use cases) → `domain` (pure rules) and
//! `store` (atomic operations; `memory` and `redis` backends).

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
