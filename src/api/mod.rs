//! The gRPC surface: thin handlers that convert wire messages into domain commands
//! (`convert`), call the use case (`crate::app`) and map errors once (`error`).

pub mod admin;
pub mod auth;
pub mod booking;
pub mod calendar;
pub mod codec;
pub mod confirmation;
pub mod convert;
pub mod error;
pub mod middleware;
pub mod pb;
pub mod room;
