//! What `sluice top` shows, gathered in the daemon: a small fixed ring of
//! one sample per second for the last ten minutes ([`History`]), and the
//! one answer ([`TopFrame`]) that carries everything a screen needs, so a
//! refresh is one round trip on the admin socket.
//!
//! Why the history lives in the daemon and not in the viewer: the person
//! on call opens `sluice top` after the trouble started, and the minutes
//! before they looked are the ones that say what happened. The ring is
//! bounded (600 samples of a few numbers per backend) and sampled from
//! what is already in memory: the metric counters, the gates' snapshots
//! and the queue's counters. The queue's shape by age (`qshape`), which
//! needs a scan of the envelopes, is computed only when a frame is asked
//! for and at most every [`SHAPE_EVERY_MS`], whoever asks.
//!
//! Owns no policy and changes nothing: it reads and reports. Never scans
//! the queue outside [`Top::frame`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_queue::{Queue, UnixMillis};

use super::api::{BackendView, Backends, Frames};
use crate::clock;
use crate::metric;
use crate::shutdown::Stage;

/// Samples kept: one per second for ten minutes.
pub const HISTORY_LEN: usize = 600;
/// How often the ring takes a sample.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How long a computed queue shape is served before it is computed again.
pub const SHAPE_EVERY_MS: u64 = 5_000;
/// Seconds the "now" rates are averaged over.
pub const RATE_WINDOW: usize = 10;
/// Age buckets of the shape, in minutes: under 5, 5 to 10, ... (qshape's
/// geometric buckets, cut where an 80-column screen ends).
pub const SHAPE_BUCKETS_MIN: [u64; 7] = [5, 10, 20, 40, 80, 160, 320];

/// Counters read from the metrics, as totals since the daemon started.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counters {
    accepted: u64,
    /// (stage, code) → replies.
    rejects: BTreeMap<(String, String), u64>,
    /// backend → (sent, deferred, bounced).
    results: BTreeMap<String, [u64; 3]>,
    /// (backend, reason) → deferrals.
    deferrals: BTreeMap<(String, String), u64>,
}

/// One backend in one sample.
#[derive(Debug, Clone)]
struct BackendSample {
    name: String,
    in_flight: u32,
    limit: u32,
    latency_ms: Option<u32>,
}

/// One second of history.
#[derive(Debug, Clone)]
struct Sample {
    at: UnixMillis,
    counters: Counters,
    queue_messages: u64,
    backends: Vec<BackendSample>,
}

/// The daemon's recorder of what `sluice top` shows.
pub struct Top {
    queue: Queue,
    backends: Arc<dyn Backends>,
    /// Routes a recipient to its backend name (from the live config).
    route: Arc<dyn Fn(&str) -> String + Send + Sync>,
    ring: Mutex<VecDeque<Sample>>,
    shape: tokio::sync::Mutex<Option<Shape>>,
    started: UnixMillis,
}

impl std::fmt::Debug for Top {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Top").field("started", &self.started).finish()
    }
}

/// Everything one screen of `sluice top` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopFrame {
    pub at: UnixMillis,
    pub host: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub queue: QueueNow,
    pub inbound: Inbound,
    pub backends: Vec<BackendRow>,
    /// The queue by age and backend; `None` while the queue is empty.
    pub shape: Option<Shape>,
    /// Queue size, one point per second, oldest first.
    pub queue_history: Vec<u64>,
    /// Each host's share of each backend's fleet-wide budget; `None`
    /// without fleet mode (`sluice_fleet_redis`): this host is the fleet.
    pub fleet: Option<Vec<FleetShare>>,
}

/// The queue's cheap counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueNow {
    pub messages: u64,
    pub recipients: u64,
    pub held: u64,
    pub bytes: u64,
    pub oldest_seconds: Option<u64>,
}

/// Accept and reject rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    pub accepted_total: u64,
    /// Messages accepted per second over the last [`RATE_WINDOW`] seconds.
    pub accepted_per_s: f64,
    /// Per second, one point per second, oldest first.
    pub accepted_history: Vec<u64>,
    /// Rejects by reason, most frequent first.
    pub rejects: Vec<Reject>,
}

/// Negative replies of one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    /// The SMTP stage (`RCPT`, `CONNECT`, ...).
    pub stage: String,
    /// The reply code (`550`, `452`).
    pub code: String,
    pub total: u64,
    pub per_s: f64,
}

/// One backend: its gate as `sluice backend list` shows it, plus flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendRow {
    pub view: BackendView,
    /// Recipients delivered per second (goodput), deferred and bounced,
    /// over the last [`RATE_WINDOW`] seconds.
    pub sent_per_s: f64,
    pub deferred_per_s: f64,
    pub bounced_per_s: f64,
    /// Deferrals since start by reason (`breaker`, `paused`, `backend`,
    /// `recipient`).
    pub deferrals: Vec<(String, u64)>,
    /// One point per second, oldest first: goodput, deliveries in
    /// progress, limit, latency (ms).
    pub sent_history: Vec<u64>,
    pub in_use_history: Vec<u64>,
    pub limit_history: Vec<u64>,
    pub latency_history: Vec<u64>,
}

/// The qshape view: recipients waiting, by backend and age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    /// When it was computed (it is cached for [`SHAPE_EVERY_MS`]).
    pub at: UnixMillis,
    /// Upper bounds of the age buckets in minutes; a last bucket is older.
    pub buckets_min: Vec<u64>,
    /// Backend → counts per bucket (buckets_min.len() + 1), biggest first.
    pub rows: Vec<(String, Vec<u64>)>,
}

/// One host's share of a backend's fleet-wide budget (fleet mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetShare {
    pub host: String,
    pub backend: String,
    pub in_flight: u32,
    pub limit: u32,
}

impl Top {
    /// A recorder over the daemon's queue and backends; `route` names the
    /// backend a recipient goes to.
    pub fn new(
        queue: Queue,
        backends: Arc<dyn Backends>,
        route: Arc<dyn Fn(&str) -> String + Send + Sync>,
    ) -> Arc<Top> {
        Arc::new(Top {
            queue,
            backends,
            route,
            ring: Mutex::new(VecDeque::with_capacity(HISTORY_LEN)),
            shape: tokio::sync::Mutex::new(None),
            started: clock::unix_millis(),
        })
    }

    /// Takes one sample a second until the stage ends.
    pub async fn run(self: Arc<Self>, stage: Stage) {
        let _guard = stage.guard();
        loop {
            self.sample().await;
            tokio::select! {
                _ = stage.cancelled() => break,
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
    }

    async fn sample(&self) {
        let counters = read_counters(&super::exporter::install().render());
        let st = self.queue.stats().await;
        let backends = self
            .backends
            .list()
            .into_iter()
            .map(|b| BackendSample {
                latency_ms: b.latency.map(|s| (s * 1000.0).round() as u32),
                name: b.name,
                in_flight: b.concurrency,
                limit: b.limit,
            })
            .collect();
        let s = Sample { at: clock::unix_millis(), counters, queue_messages: st.messages, backends };
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == HISTORY_LEN {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// The frame for one refresh, with up to `points` seconds of history.
    pub async fn frame(&self, points: usize) -> TopFrame {
        let now = clock::unix_millis();
        let st = self.queue.stats().await;
        let shape = if st.messages > 0 { Some(self.shape(now).await) } else { None };
        let views = self.backends.list();
        let counters = read_counters(&super::exporter::install().render());
        let ring: Vec<Sample> = {
            let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            let skip = ring.len().saturating_sub(points.clamp(2, HISTORY_LEN));
            ring.iter().skip(skip).cloned().collect()
        };
        let rate = Rates::over(&ring, &counters, now);
        let queue_history = ring.iter().map(|s| s.queue_messages).collect();
        let accepted_history = per_second(&ring, |c| c.accepted);
        let mut rejects: Vec<Reject> = counters
            .rejects
            .iter()
            .map(|((stage, code), &total)| Reject {
                stage: stage.clone(),
                code: code.clone(),
                total,
                per_s: rate.of(|c| c.rejects.get(&(stage.clone(), code.clone())).copied().unwrap_or(0)),
            })
            .collect();
        rejects.sort_by(|a, b| b.per_s.total_cmp(&a.per_s).then(b.total.cmp(&a.total)));
        let backends = views
            .into_iter()
            .map(|view| {
                let name = view.name.as_str();
                let res = |i: usize| move |c: &Counters| c.results.get(name).map_or(0, |r| r[i]);
                let deferrals = counters
                    .deferrals
                    .iter()
                    .filter(|((b, _), _)| *b == view.name)
                    .map(|((_, reason), n)| (reason.clone(), *n))
                    .collect();
                let series = |f: &dyn Fn(&BackendSample) -> u64| -> Vec<u64> {
                    ring.iter()
                        .map(|s| s.backends.iter().find(|b| b.name == view.name).map_or(0, f))
                        .collect()
                };
                BackendRow {
                    sent_per_s: rate.of(res(0)),
                    deferred_per_s: rate.of(res(1)),
                    bounced_per_s: rate.of(res(2)),
                    deferrals,
                    sent_history: per_second(&ring, res(0)),
                    in_use_history: series(&|b| u64::from(b.in_flight)),
                    limit_history: series(&|b| u64::from(b.limit)),
                    latency_history: series(&|b| u64::from(b.latency_ms.unwrap_or(0))),
                    view,
                }
            })
            .collect::<Vec<BackendRow>>();
        // In fleet mode, each live host's deliveries against each backend's
        // fleet-wide limit, as `backend list` shows them.
        let fleet: Vec<FleetShare> = backends
            .iter()
            .filter_map(|r| r.view.fleet.as_ref().map(|f| (r.view.name.as_str(), f)))
            .flat_map(|(backend, f)| {
                f.hosts.iter().map(move |h| FleetShare {
                    host: h.host.clone(),
                    backend: backend.to_owned(),
                    in_flight: h.in_flight,
                    limit: f.limit,
                })
            })
            .collect();
        TopFrame {
            at: now,
            host: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: now.saturating_sub(self.started) / 1000,
            queue: QueueNow {
                messages: st.messages,
                recipients: st.recipients_pending,
                held: st.held,
                bytes: st.bytes,
                oldest_seconds: st.oldest_arrival.map(|a| now.saturating_sub(a) / 1000),
            },
            inbound: Inbound {
                accepted_total: counters.accepted,
                accepted_per_s: rate.of(|c| c.accepted),
                accepted_history,
                rejects,
            },
            backends,
            shape,
            queue_history,
            fleet: (!fleet.is_empty()).then_some(fleet),
        }
    }

    /// The cached shape, computed again when older than [`SHAPE_EVERY_MS`]
    /// (one computation at a time: others wait for it and share it).
    async fn shape(&self, now: UnixMillis) -> Shape {
        let mut cached = self.shape.lock().await;
        if let Some(s) = cached.as_ref()
            && now.saturating_sub(s.at) < SHAPE_EVERY_MS
        {
            return s.clone();
        }
        let list = self.queue.list(sluice_queue::Filter::default()).await.unwrap_or_default();
        let mut rows: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (_, env, _) in &list {
            let mins = now.saturating_sub(env.arrival) / 60_000;
            let b = SHAPE_BUCKETS_MIN.iter().position(|&lim| mins < lim).unwrap_or(SHAPE_BUCKETS_MIN.len());
            for r in env.recipients.iter().filter(|r| !r.state.is_final()) {
                rows.entry((self.route)(&r.address))
                    .or_insert_with(|| vec![0; SHAPE_BUCKETS_MIN.len() + 1])[b] += 1;
            }
        }
        let mut rows: Vec<(String, Vec<u64>)> = rows.into_iter().collect();
        rows.sort_by(|a, b| b.1.iter().sum::<u64>().cmp(&a.1.iter().sum::<u64>()).then(a.0.cmp(&b.0)));
        let s = Shape { at: now, buckets_min: SHAPE_BUCKETS_MIN.to_vec(), rows };
        *cached = Some(s.clone());
        s
    }
}

impl Frames for Top {
    fn frame_json(&self, points: usize) -> futures::future::BoxFuture<'_, Result<serde_json::Value, String>> {
        Box::pin(async move { serde_json::to_value(self.frame(points).await).map_err(|e| e.to_string()) })
    }
}

/// Rates over the last [`RATE_WINDOW`] seconds of the ring, ending with
/// the counters read now.
struct Rates<'a> {
    from: Option<&'a Sample>,
    to: &'a Counters,
    seconds: f64,
}

impl<'a> Rates<'a> {
    fn over(ring: &'a [Sample], now_counters: &'a Counters, now: UnixMillis) -> Rates<'a> {
        let from = ring.len().checked_sub(RATE_WINDOW).and_then(|i| ring.get(i)).or(ring.first());
        let seconds = from.map_or(0.0, |s| now.saturating_sub(s.at) as f64 / 1000.0);
        Rates { from, to: now_counters, seconds }
    }

    fn of(&self, f: impl Fn(&Counters) -> u64) -> f64 {
        match self.from {
            Some(s) if self.seconds >= 0.5 => f(self.to).saturating_sub(f(&s.counters)) as f64 / self.seconds,
            _ => 0.0,
        }
    }
}

/// A counter's increase per sample (per second), oldest first.
fn per_second(ring: &[Sample], f: impl Fn(&Counters) -> u64) -> Vec<u64> {
    ring.windows(2).map(|w| f(&w[1].counters).saturating_sub(f(&w[0].counters))).collect()
}

/// Reads the counters `sluice top` needs out of the exporter's text
/// (the one registry they live in; reading it once a second is cheaper
/// than counting twice on every message).
fn read_counters(text: &str) -> Counters {
    let mut c = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let value = value.max(0.0) as u64;
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, labels(rest.trim_end_matches('}'))),
            None => (series, Vec::new()),
        };
        let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
        match name {
            metric::ACCEPTED => c.accepted += value,
            metric::REJECTED => *c.rejects.entry((label("stage"), label("code"))).or_default() += value,
            metric::DELIVERIES => {
                let i = match label("result").as_str() {
                    "sent" => 0,
                    "deferred" => 1,
                    "bounced" => 2,
                    _ => continue,
                };
                c.results.entry(label("backend")).or_default()[i] += value;
            }
            metric::DEFERRALS => {
                *c.deferrals.entry((label("backend"), label("reason"))).or_default() += value
            }
            _ => {}
        }
    }
    c
}

/// `a="x",b="y\"z"` → [(a, x), (b, y"z)].
fn labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, ch)) = chars.next() {
            match ch {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                other => value.push(other),
            }
        }
        out.push((name.trim_start_matches(',').trim().to_owned(), value));
        rest = &after[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_the_exporter_text() {
        let text = "# TYPE sluice_smtpd_messages_accepted_total counter\n\
            sluice_smtpd_messages_accepted_total 12\n\
            sluice_smtpd_rejects_total{stage=\"RCPT\",code=\"550\"} 3\n\
            sluice_smtpd_rejects_total{stage=\"END-OF-MESSAGE\",code=\"452\"} 4\n\
            sluice_delivery_recipients_total{backend=\"lmtp:[127.0.0.1]:24\",result=\"sent\"} 9\n\
            sluice_delivery_recipients_total{backend=\"lmtp:[127.0.0.1]:24\",result=\"deferred\"} 2\n\
            sluice_delivery_deferrals_total{backend=\"lmtp:[127.0.0.1]:24\",reason=\"breaker\"} 2\n\
            sluice_delivery_latency_seconds_bucket{backend=\"x\",le=\"0.5\"} 7\n";
        let c = read_counters(text);
        assert_eq!(c.accepted, 12);
        assert_eq!(c.rejects[&("RCPT".into(), "550".into())], 3);
        assert_eq!(c.rejects[&("END-OF-MESSAGE".into(), "452".into())], 4);
        assert_eq!(c.results["lmtp:[127.0.0.1]:24"], [9, 2, 0]);
        assert_eq!(c.deferrals[&("lmtp:[127.0.0.1]:24".into(), "breaker".into())], 2);
    }

    #[test]
    fn label_values_unescape() {
        assert_eq!(
            labels(r#"a="x",b="y\"z,\\w""#),
            vec![("a".into(), "x".into()), ("b".into(), "y\"z,\\w".into())]
        );
    }

    #[test]
    fn rates_are_the_increase_over_the_window() {
        let sample = |at: u64, accepted: u64| Sample {
            at,
            counters: Counters { accepted, ..Counters::default() },
            queue_messages: 0,
            backends: Vec::new(),
        };
        let ring: Vec<Sample> = (0..20).map(|i| sample(i * 1000, i * 5)).collect();
        let now = Counters { accepted: 100, ..Counters::default() };
        // Window starts at the sample 10 s before the end (t=10 s, 50 accepted).
        let r = Rates::over(&ring, &now, 20_000);
        assert!((r.of(|c| c.accepted) - 5.0).abs() < 1e-9);
        assert_eq!(per_second(&ring[..3], |c| c.accepted), vec![5, 5]);
        assert_eq!(Rates::over(&[], &now, 0).of(|c| c.accepted), 0.0);
    }
}
