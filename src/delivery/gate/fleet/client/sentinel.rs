//! Fleet mode through Redis Sentinel (`sluice_fleet_sentinel_master`):
//! which server is the fleet's master now. The `redis` crate's own
//! [`Sentinel`] asks the sentinels (`sluice_fleet_redis`, in order, a few at
//! once) for the master of that name and checks with `ROLE` that the
//! server it names calls itself master, so a demoted master is never taken;
//! this module turns its answer into a client with the master's
//! credentials and logs where the master is.
//!
//! Why not the crate's `SentinelClient`: its async side gives a plain
//! multiplexed connection per lookup, while the fleet keeps one connection
//! manager to the master with its own deadlines; so the fleet asks here for
//! a [`Client`] and builds the manager on it, and asks again only when the
//! master stops answering (see [`super::Fleet`]).
//!
//! Owns the connections to the sentinels. Never talks to the master beyond
//! the crate's role check, and never decides anything about deliveries.

use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{Client, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisConnectionInfo, TlsMode};

use super::{FleetSettings, lock};

/// Where the fleet's master is, per the sentinels.
pub(super) struct Sentinels {
    /// `sluice_fleet_sentinel_master`.
    name: String,
    /// The master's credentials, database and TLS mode.
    node: SentinelNodeConnectionInfo,
    /// Held across a lookup: one lookup at a time, the others wait for
    /// its answer (the caller's deadline bounds the wait).
    sentinel: tokio::sync::Mutex<Sentinel>,
    /// The last lookup's outcome, logged only when it changes (a
    /// heartbeat asks every interval while no master answers).
    last: std::sync::Mutex<String>,
}

impl Sentinels {
    /// The sentinels of `settings.urls`. Their own user and password
    /// (`sluice_fleet_sentinel_user`, `..._password_file`, or in the URL)
    /// are theirs alone; the master gets `sluice_fleet_user` and
    /// `sluice_fleet_password_file`, the first URL's database number, and
    /// TLS when the first URL is `rediss://` (sentinels and master are
    /// usually set up alike).
    pub(super) fn new(settings: &FleetSettings, name: &str) -> Result<Sentinels, redis::RedisError> {
        let mut infos = Vec::new();
        for url in &settings.urls {
            let info = url.as_str().into_connection_info()?;
            // Sentinels have no databases: the number is the master's.
            let mut redis = info.redis_settings().clone().set_db(0);
            if let Some(u) = &settings.sentinel_user {
                redis = redis.set_username(u);
            }
            if let Some(p) = &settings.sentinel_password {
                redis = redis.set_password(p);
            }
            infos.push(info.set_redis_settings(redis));
        }
        let first = infos.first().cloned();
        let db = settings
            .urls
            .first()
            .and_then(|u| u.as_str().into_connection_info().ok())
            .map_or(0, |i| i.redis_settings().db());
        let mut master = RedisConnectionInfo::default().set_db(db);
        if let Some(u) = &settings.user {
            master = master.set_username(u);
        }
        if let Some(p) = &settings.password {
            master = master.set_password(p);
        }
        let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(master);
        match first.as_ref().map(|i| i.addr()) {
            Some(ConnectionAddr::TcpTls { insecure: false, .. }) => node = node.set_tls_mode(TlsMode::Secure),
            Some(ConnectionAddr::TcpTls { insecure: true, .. }) => {
                node = node.set_tls_mode(TlsMode::Insecure)
            }
            _ => {}
        }
        Ok(Sentinels {
            name: name.to_owned(),
            node,
            sentinel: tokio::sync::Mutex::new(Sentinel::build(infos)?),
            last: std::sync::Mutex::new(String::new()),
        })
    }

    /// The master's name at the sentinels.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Asks the sentinels for the master now: a client for it and its
    /// address (`host:port`). Logs the outcome when it differs from the
    /// last one: where the master is, or why none was found (a warning:
    /// the fleet runs on its local share meanwhile).
    pub(super) async fn master(&self) -> Option<(Client, String)> {
        let found = {
            let mut sentinel = self.sentinel.lock().await;
            sentinel.async_master_for(&self.name, Some(&self.node)).await
        };
        let (outcome, r) = match found {
            Ok(client) => {
                let addr = client.get_connection_info().addr().to_string();
                (format!("master {} at {addr}", self.name), Some((client, addr)))
            }
            Err(e) if e.kind() == ErrorKind::MasterNameNotFoundBySentinel => {
                (format!("none names a master {} that answers as master", self.name), None)
            }
            Err(e) => (format!("no master {} found: {e}", self.name), None),
        };
        let mut last = lock(&self.last);
        if *last != outcome {
            if r.is_some() {
                tracing::info!("fleet: sentinels name {outcome}");
            } else {
                // Whether the fleet is on its local share meanwhile is for
                // the caller to log: a check while the master answers can
                // fail too.
                tracing::warn!("fleet: sentinels: {outcome}");
            }
            *last = outcome;
        }
        r
    }
}
