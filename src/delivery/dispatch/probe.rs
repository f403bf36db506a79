//! An address verification probe through one backend: the gate's permit
//! first (as a delivery takes one), then a pooled connection or a new one,
//! `MAIL FROM`/`RCPT TO`/`RSET` (`client/probe.rs`), the result reported
//! to the gate, and the connection kept for the next delivery or probe.
//!
//! Never waits long for the gate: a backend that has no slot within the
//! caller's wait, is paused, has its breaker open or is being tested by
//! its half-open probe gets no probe at all ([`Busy`]), because a
//! struggling mailbox server must not be given more work by the very
//! clients it cannot serve. Never caches; that is `verify.rs`'s.

use std::time::Duration;

use super::Backend;
use crate::clock;
use crate::delivery::client::ProbeAnswer;
use crate::delivery::gate::{Admission, Report};

/// Why no probe was made: the backend cannot take one now (the text is
/// for the client's reply and the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy(pub String);

/// What a probe found, and where it went (`relay=` of its log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub answer: ProbeAnswer,
    pub relay: String,
}

impl Backend {
    /// Probes `rcpt` with `sender` through this backend's gate, waiting at
    /// most `slot_wait` for a concurrency slot or the rate limit.
    pub async fn probe(&self, sender: &str, rcpt: &str, slot_wait: Duration) -> Result<Probed, Busy> {
        let deadline = clock::instant() + slot_wait;
        let mut permit = loop {
            let now = clock::unix_millis();
            match self.gate.admit(now).await {
                // The half-open breaker's trial is for real mail: a probe
                // would take it and tell the breaker little.
                Admission::Go(p) if p.is_probe() => {
                    let fb = self.gate.report(p, Report::Abandoned, now, clock::instant());
                    self.apply(fb).await;
                    return Err(Busy(format!("backend {} is being tested after failures", self.name)));
                }
                Admission::Go(p) => break p,
                Admission::WaitProbe => {
                    return Err(Busy(format!("backend {} is being tested after failures", self.name)));
                }
                Admission::Postpone { reason, .. } => {
                    return Err(Busy(if self.gate.is_paused(now) {
                        format!("backend {} is paused", self.name)
                    } else {
                        format!("backend {} is not answering: {reason}", self.name)
                    }));
                }
                Admission::WaitSlot => {
                    tokio::select! {
                        _ = self.gate.changed() => {}
                        _ = tokio::time::sleep_until(deadline) => {
                            return Err(Busy(format!("backend {} is busy: no free connection slot", self.name)));
                        }
                    }
                }
                Admission::WaitRate(wait) => {
                    if clock::instant() + wait > deadline {
                        return Err(Busy(format!("backend {} is busy: at its rate limit", self.name)));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let settings = self.gate.settings();
        let pooled = super::lock(&self.pool).pop();
        let (report, probed) = match self.connection(&settings, pooled).await {
            Err(f) => {
                let report =
                    if f.ours { Report::Abandoned } else { Report::Unreachable { error: f.text.clone() } };
                (report, Probed { answer: ProbeAnswer::Broken(f.text), relay: "none".into() })
            }
            Ok((mut c, _)) => {
                let relay = c.target().to_string();
                let (answer, reusable) = c.probe(sender, rcpt).await;
                let report = match &answer {
                    ProbeAnswer::Broken(text) => Report::Failed { error: text.clone() },
                    _ => Report::Completed { latency: None },
                };
                if reusable {
                    // Kept while this probe still holds its slot, as a
                    // delivery keeps its connection.
                    self.keep(c, &mut permit).await;
                }
                (report, Probed { answer, relay })
            }
        };
        let fb = self.gate.report(permit, report, clock::unix_millis(), clock::instant());
        self.apply(fb).await;
        Ok(probed)
    }
}
