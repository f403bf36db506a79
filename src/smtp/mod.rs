//! The inbound SMTP server: listener, sessions, policy checks, TLS.
//! Writes accepted mail through the queue crate; never delivers.
