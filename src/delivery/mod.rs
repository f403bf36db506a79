//! Delivery: the scheduler, the per-backend gate (rate limiter, adaptive
//! concurrency, circuit breaker), the LMTP/SMTP client, bounces and DNS.
//! Never touches inbound sessions.
mod stub;
pub use stub::{Handle, start};
