//! The plan for one claimed message: which recipients go to which backend,
//! in which deliveries, and which the scheduler answers itself.
//!
//! Every recipient that is not final is routed through the configuration
//! (`transport_maps`, `relayhost`, ...): [`routes`] asks it, directory
//! tables included, before the plan is made. Recipients for the same backend
//! (transport and next hop) are grouped, and each group is cut into
//! deliveries of at most that transport's
//! `<transport>_destination_recipient_limit`. An `error:` route bounces,
//! a `discard:` route is delivered to nowhere, and a lookup that fails
//! defers: those the scheduler records itself, without a backend.
//!
//! [`plan`] is pure: no queue, no clock, no backend, no lookup is
//! touched; the scheduler carries the plan out.

use std::sync::Arc;

use sluice_queue::Envelope;

use super::BackendId;
use super::client::Verdict;
use super::result_line::Agent;
use super::settings::BackendSettings;
use crate::config::{Config, Route, TableError};
use crate::reply::Status;

/// What to do with one claimed message.
#[derive(Debug, Default)]
pub struct Plan {
    /// The deliveries: a backend, its settings, and the recipients (indexes
    /// into the envelope) it gets in one transaction.
    pub jobs: Vec<(BackendId, Arc<BackendSettings>, Vec<usize>)>,
    /// Recipients the scheduler answers itself.
    pub immediate: Vec<Immediate>,
}

/// A recipient answered without a backend, and how its line is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Immediate {
    pub index: usize,
    /// The Postfix program its result line names (`error`, `discard`, `qmgr`).
    pub agent: Agent,
    pub verdict: Verdict,
    pub dsn: Status,
    pub text: String,
}

/// The route of each recipient of `env` (`None` for final ones), in
/// recipient order: transport_maps and relay_domains asked as routing
/// asks them, a directory table through its cache and breakers within its
/// timeout. A failed lookup is that recipient's error (it is deferred).
pub async fn routes(config: &Config, env: &Envelope) -> Vec<Option<Result<Route, TableError>>> {
    let mut out = Vec::with_capacity(env.recipients.len());
    for r in &env.recipients {
        out.push(if r.state.is_final() { None } else { Some(config.route_async(&r.address).await) });
    }
    out
}

/// Plans the open recipients of `env` under `config` with their `routes`
/// (from [`routes`]); `settings_for` gives a backend's settings (the
/// caller caches them per configuration).
pub fn plan(
    config: &Config,
    env: &Envelope,
    routes: &[Option<Result<Route, TableError>>],
    settings_for: &mut dyn FnMut(&BackendId) -> Arc<BackendSettings>,
) -> Plan {
    let mut immediate = Vec::new();
    let mut groups: Vec<(BackendId, Arc<BackendSettings>, Vec<usize>)> = Vec::new();
    let mut answer =
        |index, agent, verdict, dsn, text| immediate.push(Immediate { index, agent, verdict, dsn, text });
    for (i, r) in env.recipients.iter().enumerate() {
        if r.state.is_final() {
            continue;
        }
        let route = match routes.get(i) {
            Some(Some(route)) => route.clone(),
            // Not routed beforehand: in-memory tables can still answer.
            _ => config.route(&r.address),
        };
        match route {
            Ok(Route::Deliver { transport, protocol, nexthop, by_domain }) => {
                let id = BackendId { transport, protocol, nexthop, by_domain };
                match groups.iter_mut().find(|(g, _, _)| *g == id) {
                    Some((_, _, v)) => v.push(i),
                    None => {
                        let bs = settings_for(&id);
                        groups.push((id, bs, vec![i]));
                    }
                }
            }
            Ok(Route::Error { text }) => {
                let (dsn, text) = split_status(&text, Status(5, 0, 0));
                answer(i, Agent::Error, Verdict::Bounced, dsn, text);
            }
            Ok(Route::Discard { text }) => answer(
                i,
                Agent::Discard,
                Verdict::Sent,
                Status(2, 0, 0),
                if text.is_empty() { "discarded".into() } else { text },
            ),
            Err(e) => answer(
                i,
                Agent::Qmgr,
                Verdict::Deferred,
                Status(4, 3, 0),
                format!("transport map lookup failure: {e}"),
            ),
        }
    }
    // Split each group by the transport's recipient limit.
    let mut jobs = Vec::new();
    for (id, bs, rcpts) in groups {
        for chunk in rcpts.chunks(bs.recipient_limit.max(1)) {
            jobs.push((id.clone(), Arc::clone(&bs), chunk.to_vec()));
        }
    }
    Plan { jobs, immediate }
}

/// `5.1.1 text` → (5.1.1, text); otherwise the default status.
fn split_status(text: &str, default: Status) -> (Status, String) {
    match text.split_once(' ') {
        Some((head, rest)) if Status::parse(head).is_some() => {
            (Status::parse(head).unwrap_or(default), rest.to_owned())
        }
        _ => (default, text.to_owned()),
    }
}

#[cfg(test)]
mod tests;
