//! Delivery: the scheduler, the per-backend gate (rate limiter, adaptive
//! concurrency, circuit breaker), the LMTP/SMTP client, bounces and DNS.
//! Never touches inbound sessions.

pub mod backoff;
pub mod bounce;
pub mod client;
pub mod dns;
pub mod gate;
pub mod log;
pub mod settings;
