//! The fleet's atomic steps: one Lua script each, run by Redis with
//! `EVALSHA` (the client falls back to `EVAL` on `NOSCRIPT`, after a Redis
//! restart or failover), and the typed reading of their replies.
//!
//! Every script takes the time from Redis (`TIME`), never from the host, so
//! hosts whose clocks differ still agree on lease expiry, the rate's
//! schedule and the breaker's probe time; durations go back to the host as
//! "milliseconds from now". A backend's keys share one hash tag
//! (`sluice:{FLEET|BACKEND}:...`), so every script touches one slot (Redis
//! Cluster would accept it) and two fleets on one Redis never meet.
//!
//! Owns the scripts and their key layout. Never decides policy in Rust from
//! values read out of Redis: what must be atomic happens inside a script.

use redis::{FromRedisValue, Script, Value};

/// The keys of one backend in one fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Sorted set: lease member (`HOST|nonce`) → expiry (Redis ms).
    pub leases: String,
    /// Hash: `state` (`open` or absent), `probe_at`, `probe` (the probe's
    /// lease), `failures`, `opens`, `error`, `epoch` (bumped when the
    /// breaker closes or a pause ends: hosts watching it wake their mail).
    pub breaker: String,
    /// String: paused until (Redis ms; `0`: until resumed).
    pub pause: String,
    /// String: the rate's theoretical arrival time (GCRA, Redis ms).
    pub rate: String,
    /// String: the fleet's adaptive concurrency limit, written by the
    /// limit owner (absent: the initial concurrency).
    pub limit: String,
    /// String with expiry: the limit owner's member (a lease).
    pub owner: String,
    /// Sorted set: host → until when it waits for a slot (Redis ms): an
    /// idle connection's lease that has had its turn goes to a waiting
    /// host.
    pub wanted: String,
    /// List: latency samples from every host, `STARTED LATENCY_US
    /// IN_FLIGHT KIND` (Redis ms, µs, fleet-wide deliveries, `ok` or
    /// `over`), taken by the limit owner.
    pub samples: String,
}

impl Keys {
    pub fn new(fleet: &str, backend: &str) -> Keys {
        let tag = format!("sluice:{{{fleet}|{backend}}}");
        Keys {
            leases: format!("{tag}:leases"),
            breaker: format!("{tag}:breaker"),
            pause: format!("{tag}:pause"),
            rate: format!("{tag}:rate"),
            limit: format!("{tag}:limit"),
            owner: format!("{tag}:owner"),
            wanted: format!("{tag}:wanted"),
            samples: format!("{tag}:samples"),
        }
    }
}

/// The key of the fleet's host registry (sorted set: host → expiry).
pub fn hosts_key(fleet: &str) -> String {
    format!("sluice:{{{fleet}}}:hosts")
}

const NOW: &str =
    "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Shared by the scripts: the host of a lease member (`HOST|nonce`); the
/// fleet's limit now (the ceiling, or the shared adaptive limit below it
/// when `initial` > 0: the limit is adaptive); whether a host other than
/// the member's waits for a slot (in the `wanted` set).
const HELPERS: &str = r#"
local function lease_host(member)
  return string.match(member, '^(.*)|') or member
end
local function fleet_limit(ceiling, initial, limit_key)
  if initial > 0 then
    local shared = tonumber(redis.call('GET', limit_key) or initial)
    if shared < ceiling then return math.max(shared, 1) end
  end
  return ceiling
end
local function other_waiting(member, wanted_key)
  if not wanted_key then return false end
  local host = lease_host(member)
  for _, h in ipairs(redis.call('ZRANGEBYSCORE', wanted_key, now, '+inf', 'LIMIT', 0, 2)) do
    if h ~= host then return true end
  end
  return false
end
"#;

/// The most samples kept waiting for the limit owner (the newest win).
/// It bounds the owner's reply (about 30 bytes a sample) when the owner is
/// gone and samples pile up until another takes over. Not a setting: an
/// owner takes them every 100 ms (`steer::STEER_EVERY`), so the cap is
/// reached only above 20,000 deliveries a second to one backend, and the
/// newest 2,000 say as much about its latency as more.
pub const SAMPLE_CAP: usize = 2000;

/// How long samples wait for an owner after the last one came (ms): a
/// fleet that stops delivering to a backend, or stops steering it, leaves
/// no list behind in the shared Redis. A new owner takes over within the
/// lease time (`sluice_fleet_lease_time`, 10 s by default); samples older
/// than this describe a server that may have changed since.
pub const SAMPLE_TTL_MS: u64 = 60_000;

/// How long a host refused a slot counts as waiting for one (ms): an idle
/// connection's lease that has had its turn goes to it in that time. Not a
/// setting: a waiting host asks again every `fleet::POLL` (50 ms), so a
/// second covers twenty of its asks and ends soon after it stops waiting.
pub const WANTED_MS: u64 = 1000;

/// Admission: pause, breaker, free lease, rate; takes the lease when all
/// say yes. A member that still holds its lease (an idle connection's,
/// offered again) keeps it without being counted twice, unless the fleet
/// holds more leases than its limit now allows, or the lease has had its
/// turn and another host waits for a slot: then the host is told to give
/// it back (`shed`), which it does once its connection is closed. A host refused for want of a slot is noted
/// as waiting for [`WANTED_MS`]. KEYS: leases, breaker, pause, rate, limit,
/// wanted. ARGV: member (`HOST|nonce`), lease ms, limit (the ceiling),
/// rate interval ms (0: none), rate tolerance ms, initial concurrency
/// (`0`: the limit is fixed, the shared adaptive limit is not read), turn
/// over (`1`: an offered lease has had its turn), then members to adopt
/// (leases for deliveries started while Redis was unreachable, taken
/// whatever the count so the fleet sees them).
const ADMIT: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease_ms = tonumber(ARGV[2])
for i = 8, #ARGV do
  redis.call('ZADD', KEYS[1], now + lease_ms, ARGV[i])
end
local p = redis.call('GET', KEYS[3])
if p then
  local u = tonumber(p)
  if u == 0 then return {'paused', -1, ''} end
  if u > now then return {'paused', u - now, ''} end
end
local b = redis.call('HMGET', KEYS[2], 'state', 'probe_at', 'probe', 'error')
local probe = false
if b[1] == 'open' then
  local at = tonumber(b[2]) or 0
  if now < at then return {'open', at - now, b[4] or ''} end
  if b[3] and redis.call('ZSCORE', KEYS[1], b[3]) then return {'probe_wait', 0, ''} end
  probe = true
end
local limit = fleet_limit(tonumber(ARGV[3]), tonumber(ARGV[6] or '0'), KEYS[5])
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
local count = redis.call('ZCARD', KEYS[1])
if held then
  if count > limit or (ARGV[7] == '1' and other_waiting(ARGV[1], KEYS[6])) then
    return {'shed', 0, ''}
  end
elseif count >= limit then
  if KEYS[6] then
    redis.call('ZADD', KEYS[6], now + WANTED_MS, lease_host(ARGV[1]))
    redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
    redis.call('PEXPIRE', KEYS[6], 2 * WANTED_MS)
  end
  return {'slot', 0, ''}
end
local interval = tonumber(ARGV[4])
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[4]) or '0')
  if tat < now then tat = now end
  local wait = tat - tonumber(ARGV[5]) - now
  if wait > 0 then return {'rate', wait, ''} end
  redis.call('SET', KEYS[4], tat + interval, 'PX', tat + interval - now + 1000)
end
redis.call('ZADD', KEYS[1], now + lease_ms, ARGV[1])
if probe then
  redis.call('HSET', KEYS[2], 'probe', ARGV[1])
  return {'probe', 0, ''}
end
return {'go', 0, ''}
"#;

/// The end of a delivery: gives the lease back, feeds the breaker and (when
/// the limit is adaptive) the limit owner's samples. KEYS: leases,
/// breaker, samples, limit. ARGV: member, outcome (`ok`, `overload`,
/// `fail`, `abandon`), failure threshold, cool-down ms, longest cool-down
/// ms, error, then latency µs (`-1`: no sample), the delivery's duration
/// ms, initial concurrency (`0`: fixed limit, no samples; the limit
/// restarts there when the breaker closes, or at the level the limit
/// owner last settled at when that is lower, as the single host's), keep (`1`: the lease stays
/// with the delivery's idle connection; absent or `0`: given back), then,
/// when kept, the ceiling and turn over (`1`: the lease has had its turn).
/// KEYS also: wanted. A kept lease's finish answers `shed` instead of `ok`
/// when the fleet wants it back, as the admission script would: more
/// leases held than the limit allows, or its turn over and another host
/// waiting (the host gives it back once its connection is closed).
const FINISH: &str = r#"
local in_flight = math.max(redis.call('ZCARD', KEYS[1]), 1)
local initial = tonumber(ARGV[9] or '0')
local ok = 'ok'
if ARGV[10] ~= '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
elseif ARGV[11] then
  local limit = fleet_limit(tonumber(ARGV[11]), initial, KEYS[4])
  if redis.call('ZCARD', KEYS[1]) > limit or (ARGV[12] == '1' and other_waiting(ARGV[1], KEYS[5])) then
    ok = 'shed'
  end
end
if initial > 0 then
  local kind = nil
  if ARGV[2] == 'ok' and tonumber(ARGV[7]) >= 0 then kind = 'ok' end
  if ARGV[2] == 'overload' or ARGV[2] == 'fail' then kind = 'over' end
  if kind then
    local started = now - tonumber(ARGV[8])
    redis.call('RPUSH', KEYS[3], started .. ' ' .. math.max(tonumber(ARGV[7]), 0) .. ' ' .. in_flight .. ' ' .. kind)
    redis.call('LTRIM', KEYS[3], -SAMPLE_CAP, -1)
    redis.call('PEXPIRE', KEYS[3], SAMPLE_TTL_MS)
  end
end
local b = redis.call('HMGET', KEYS[2], 'state', 'probe', 'opens', 'settled')
local is_probe = b[2] == ARGV[1]
local outcome = ARGV[2]
if outcome == 'ok' then
  if is_probe then
    redis.call('HSET', KEYS[2], 'failures', 0, 'opens', 0)
    redis.call('HDEL', KEYS[2], 'state', 'probe', 'probe_at')
    redis.call('HINCRBY', KEYS[2], 'epoch', 1)
    if initial > 0 then
      redis.call('SET', KEYS[4], math.min(tonumber(b[4] or '') or initial, initial))
    end
    return 'closed'
  end
  if b[1] ~= 'open' then redis.call('HSET', KEYS[2], 'failures', 0) end
  return ok
end
if outcome == 'abandon' then
  if is_probe then redis.call('HDEL', KEYS[2], 'probe') end
  return ok
end
redis.call('HSET', KEYS[2], 'error', ARGV[6])
if is_probe then
  local opens = (tonumber(b[3]) or 1) + 1
  local cd = math.min(tonumber(ARGV[4]) * 2 ^ (opens - 1), tonumber(ARGV[5]))
  redis.call('HSET', KEYS[2], 'state', 'open', 'probe_at', now + math.floor(cd), 'opens', opens)
  redis.call('HDEL', KEYS[2], 'probe')
  return 'reopened'
end
if outcome == 'overload' or b[1] == 'open' then return ok end
local f = redis.call('HINCRBY', KEYS[2], 'failures', 1)
if f >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[2], 'state', 'open', 'probe_at', now + tonumber(ARGV[4]), 'opens', 1)
  return 'opened'
end
return 'failed'
"#;

/// The successful ends of deliveries whose leases stay with their idle
/// connections, several in one call: their samples for the limit owner
/// (when adaptive), the breaker's failure count reset (unless open), and
/// which of those leases the fleet wants back, by the admission script's
/// rule (the leases held beyond the limit, one each, and any whose turn is
/// over while another host waits). KEYS: leases, breaker, samples, limit,
/// wanted. ARGV: ceiling, initial concurrency (`0`: fixed limit, no
/// samples), then four per delivery: member, latency µs (`-1`: no
/// sample), the delivery's duration ms, turn over (`1`/`0`). Returns the
/// members to give back.
const FINISH_KEPT: &str = r#"
local initial = tonumber(ARGV[2])
local count = redis.call('ZCARD', KEYS[1])
local over = count - fleet_limit(tonumber(ARGV[1]), initial, KEYS[4])
local in_flight = math.max(count, 1)
local shed = {}
local sampled = false
for i = 3, #ARGV - 3, 4 do
  local latency = tonumber(ARGV[i + 1])
  if initial > 0 and latency >= 0 then
    local started = now - tonumber(ARGV[i + 2])
    redis.call('RPUSH', KEYS[3], started .. ' ' .. latency .. ' ' .. in_flight .. ' ok')
    sampled = true
  end
  if over > 0 or (ARGV[i + 3] == '1' and other_waiting(ARGV[i], KEYS[5])) then
    table.insert(shed, ARGV[i])
    over = over - 1
  end
end
if sampled then
  redis.call('LTRIM', KEYS[3], -SAMPLE_CAP, -1)
  redis.call('PEXPIRE', KEYS[3], SAMPLE_TTL_MS)
end
if redis.call('HGET', KEYS[2], 'state') ~= 'open' then redis.call('HSET', KEYS[2], 'failures', 0) end
return shed
"#;

/// Renews running deliveries' leases. KEYS: leases. ARGV: lease ms, members.
/// A member missing from the set is added again: Redis restarted without
/// persistence, or was out of reach for longer than the lease time, while
/// the delivery ran on, and the fleet must count it or it admits past its
/// limit. The cost: a renewal that crosses the delivery's own finish on
/// the wire leaves that slot counted for one lease time (the finish task
/// stops renewing a lease before it gives it back, so only a renewal
/// already under way can).
const RENEW: &str = r#"
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'CH', now + tonumber(ARGV[1]), ARGV[i])
end
return n
"#;

/// Pauses (ARGV[1]: ms from now, `0`: until resumed) or resumes (ARGV[1]:
/// `-1`). KEYS: pause, breaker.
const PAUSE: &str = r#"
local ms = tonumber(ARGV[1])
if ms < 0 then
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBY', KEYS[2], 'epoch', 1)
elseif ms == 0 then
  redis.call('SET', KEYS[1], 0)
else
  redis.call('SET', KEYS[1], now + ms, 'PX', ms)
end
return 1
"#;

/// The backend's fleet state, for watching and listing. KEYS: leases,
/// breaker, pause, limit. Returns epoch, open (0/1), probe in ms (-1:
/// none), pause (-2: none, -1: until resumed, else ms left), the shared
/// adaptive limit (-1: none written), then the live lease members.
const STATUS: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local b = redis.call('HMGET', KEYS[2], 'epoch', 'state', 'probe_at')
local open = 0
local probe = -1
if b[2] == 'open' then
  open = 1
  probe = math.max(0, (tonumber(b[3]) or now) - now)
end
local paused = -2
local p = redis.call('GET', KEYS[3])
if p then
  local u = tonumber(p)
  if u == 0 then paused = -1 elseif u > now then paused = u - now end
end
local limit = -1
if KEYS[4] then limit = tonumber(redis.call('GET', KEYS[4]) or '-1') end
local out = {tonumber(b[1]) or 0, open, probe, paused, limit}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, 999)) do table.insert(out, m) end
return out
"#;

/// The limit owner's step: keeps (or takes, when free) the owner lease,
/// writes the limit it computed, and takes the samples waiting. KEYS:
/// owner, samples, limit, breaker. ARGV: member, lease ms, limit to write
/// (`0`: none), take samples (`1`/`0`), the level the owner's limiter
/// settled at (`0` or absent: none yet; kept in the breaker's hash, where
/// the finish script restarts the limit when the breaker closes). Returns
/// owner (1/0), Redis now (ms), the limit now (-1: none written), then the
/// samples (owner only).
const STEER: &str = r#"
local o = redis.call('GET', KEYS[1])
if o and o ~= ARGV[1] then
  return {0, now, tonumber(redis.call('GET', KEYS[3]) or '-1')}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
local w = tonumber(ARGV[3])
if w > 0 then redis.call('SET', KEYS[3], w) end
local settled = tonumber(ARGV[5] or '0')
if settled > 0 and KEYS[4] then redis.call('HSET', KEYS[4], 'settled', settled) end
local out = {1, now, tonumber(redis.call('GET', KEYS[3]) or '-1')}
if ARGV[4] == '1' then
  for _, x in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do table.insert(out, x) end
  redis.call('DEL', KEYS[2])
end
return out
"#;

/// A host's heartbeat. KEYS: hosts. ARGV: host, ms until it counts as gone.
/// Returns the live hosts.
const HEARTBEAT: &str = r#"
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, 999)
"#;

/// The compiled scripts (each keeps its SHA1 for `EVALSHA`).
#[derive(Debug)]
pub struct Scripts {
    pub admit: Script,
    pub finish: Script,
    pub finish_kept: Script,
    pub renew: Script,
    pub pause: Script,
    pub status: Script,
    pub heartbeat: Script,
    pub steer: Script,
}

impl Default for Scripts {
    fn default() -> Scripts {
        let s = |body: &str| {
            let body = body
                .replace("SAMPLE_CAP", &SAMPLE_CAP.to_string())
                .replace("SAMPLE_TTL_MS", &SAMPLE_TTL_MS.to_string())
                .replace("WANTED_MS", &WANTED_MS.to_string());
            Script::new(&format!("{NOW}{HELPERS}{body}"))
        };
        Scripts {
            admit: s(ADMIT),
            finish: s(FINISH),
            finish_kept: s(FINISH_KEPT),
            renew: s(RENEW),
            pause: s(PAUSE),
            status: s(STATUS),
            heartbeat: s(HEARTBEAT),
            steer: s(STEER),
        }
    }
}

/// What the admission script said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A lease was taken.
    Go,
    /// A lease was taken for the half-open probe.
    Probe,
    /// Every lease of the fleet is taken.
    Slot,
    /// The idle connection's lease offered again must go back (after its
    /// connection closes): the fleet holds more than its limit now allows,
    /// or another host waits.
    Shed,
    /// Another host's probe is running.
    ProbeWait,
    /// The rate allows the next start in this many ms.
    Rate(u64),
    /// Paused for this many ms (`None`: until resumed).
    Paused(Option<u64>),
    /// The breaker is open for this many ms; the error that opened it.
    Open(u64, String),
}

impl FromRedisValue for Verdict {
    fn from_redis_value(v: Value) -> Result<Verdict, redis::ParsingError> {
        let (word, ms, text): (String, i64, String) = FromRedisValue::from_redis_value(v)?;
        let ms_u = ms.max(0) as u64;
        Ok(match word.as_str() {
            "go" => Verdict::Go,
            "probe" => Verdict::Probe,
            "slot" => Verdict::Slot,
            "shed" => Verdict::Shed,
            "probe_wait" => Verdict::ProbeWait,
            "rate" => Verdict::Rate(ms_u),
            "paused" => Verdict::Paused((ms >= 0).then_some(ms_u)),
            "open" => Verdict::Open(ms_u, text),
            other => return Err(format!("unknown admission verdict {other:?}").into()),
        })
    }
}

/// A backend's fleet state as the status script reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// Bumped when the breaker closes or a pause ends.
    pub epoch: u64,
    /// The breaker is open (or half-open: a probe may be running).
    pub open: bool,
    /// Ms until the next probe may start, while open.
    pub probe_in: Option<u64>,
    /// `Some(None)`: paused until resumed; `Some(Some(ms))`: for ms more.
    pub paused: Option<Option<u64>>,
    /// The shared adaptive limit, when the limit owner has written one.
    pub limit: Option<u32>,
    /// Live lease members (`HOST|nonce`).
    pub leases: Vec<String>,
}

impl FromRedisValue for Status {
    fn from_redis_value(v: Value) -> Result<Status, redis::ParsingError> {
        let ([epoch, open, probe, paused, limit], leases) = ints_then_strings(v, "status")?;
        let open = open == 1;
        Ok(Status {
            epoch: epoch.max(0) as u64,
            open,
            probe_in: (open && probe >= 0).then_some(probe.max(0) as u64),
            paused: match paused {
                -2 => None,
                -1 => Some(None),
                ms => Some(Some(ms.max(0) as u64)),
            },
            limit: written_limit(limit),
            leases,
        })
    }
}

/// A script's reply of `N` integers then strings (lease members,
/// samples); `what` names the script when the reply is short.
fn ints_then_strings<const N: usize>(
    v: Value,
    what: &str,
) -> Result<([i64; N], Vec<String>), redis::ParsingError> {
    let items: Vec<Value> = FromRedisValue::from_redis_value(v)?;
    if items.len() < N {
        return Err(format!("short fleet {what} reply").into());
    }
    let mut it = items.into_iter();
    let mut head = [0; N];
    // `zip` asks `head` first: nothing past the integers is taken here.
    for (slot, v) in head.iter_mut().zip(it.by_ref()) {
        *slot = FromRedisValue::from_redis_value(v)?;
    }
    Ok((head, it.map(String::from_redis_value).collect::<Result<_, _>>()?))
}

/// The shared adaptive limit as the scripts report it (`-1`: none
/// written).
fn written_limit(limit: i64) -> Option<u32> {
    u32::try_from(limit).ok().filter(|&l| l > 0)
}

/// One delivery's feedback as the finish script keeps it for the limit
/// owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetSample {
    /// When the delivery started (Redis ms).
    pub started: u64,
    /// The server's share of the transaction time.
    pub latency: std::time::Duration,
    /// Deliveries running in the fleet when it finished (itself included).
    pub in_flight: u32,
    /// An overload answer or a failure, not a latency sample.
    pub overload: bool,
}

impl FleetSample {
    /// Reads `STARTED LATENCY_US IN_FLIGHT KIND`; `None` when malformed.
    pub fn parse(text: &str) -> Option<FleetSample> {
        let mut it = text.split(' ');
        let started = it.next()?.parse().ok()?;
        let micros: u64 = it.next()?.parse().ok()?;
        let in_flight = it.next()?.parse().ok()?;
        let overload = match it.next()? {
            "ok" => false,
            "over" => true,
            _ => return None,
        };
        Some(FleetSample { started, latency: std::time::Duration::from_micros(micros), in_flight, overload })
    }
}

/// What the limit owner's step said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steer {
    /// This member holds the owner lease.
    pub owner: bool,
    /// Redis's clock (ms).
    pub now: u64,
    /// The shared limit now, when one was written.
    pub limit: Option<u32>,
    /// The samples taken (owner only; malformed ones dropped).
    pub samples: Vec<FleetSample>,
}

impl FromRedisValue for Steer {
    fn from_redis_value(v: Value) -> Result<Steer, redis::ParsingError> {
        let ([owner, now, limit], samples) = ints_then_strings(v, "steer")?;
        Ok(Steer {
            owner: owner == 1,
            now: now.max(0) as u64,
            limit: written_limit(limit),
            samples: samples.iter().filter_map(|t| FleetSample::parse(t)).collect(),
        })
    }
}

/// The host part of a lease member (`HOST|nonce`).
pub fn lease_host(member: &str) -> &str {
    member.rsplit_once('|').map_or(member, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backends_keys_share_one_hash_tag_named_after_the_fleet() {
        let k = Keys::new("mx", "lmtp:[10.0.0.1]:24");
        for key in [&k.leases, &k.breaker, &k.pause, &k.rate, &k.limit, &k.owner, &k.samples] {
            assert!(key.starts_with("sluice:{mx|lmtp:[10.0.0.1]:24}:"), "{key}");
        }
        assert_ne!(Keys::new("other", "lmtp:[10.0.0.1]:24").leases, k.leases);
        assert_eq!(hosts_key("mx"), "sluice:{mx}:hosts");
    }

    #[test]
    fn samples_read_back_as_written_and_malformed_ones_are_dropped() {
        let s = FleetSample::parse("1700000000123 45000 3 ok").unwrap();
        assert_eq!(s.started, 1_700_000_000_123);
        assert_eq!(s.latency, std::time::Duration::from_millis(45));
        assert_eq!(s.in_flight, 3);
        assert!(!s.overload);
        assert!(FleetSample::parse("1 0 1 over").unwrap().overload);
        assert_eq!(FleetSample::parse("1 x 1 ok"), None);
        assert_eq!(FleetSample::parse("1 2 3 maybe"), None);
    }

    #[test]
    fn replies_read_their_integers_then_their_strings() {
        let int = Value::Int;
        let text = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let st = Status::from_redis_value(Value::Array(vec![
            int(7),
            int(1),
            int(250),
            int(-1),
            int(4),
            text("mx1|1.0"),
            text("mx2|9.3"),
        ]))
        .unwrap();
        assert_eq!(
            (st.epoch, st.open, st.probe_in, st.paused, st.limit),
            (7, true, Some(250), Some(None), Some(4))
        );
        assert_eq!(st.leases, ["mx1|1.0", "mx2|9.3"]);
        let steer =
            Steer::from_redis_value(Value::Array(vec![int(1), int(5000), int(-1), text("4900 300 2 ok")]))
                .unwrap();
        assert_eq!((steer.owner, steer.now, steer.limit, steer.samples.len()), (true, 5000, None, 1));
        // A short reply is an error, not zeros.
        assert!(Status::from_redis_value(Value::Array(vec![int(7), int(0), int(-1), int(-2)])).is_err());
        assert!(Steer::from_redis_value(Value::Array(vec![int(1), int(5000)])).is_err());
    }

    #[test]
    fn lease_members_name_their_host() {
        assert_eq!(lease_host("mx1.example.org|42.7"), "mx1.example.org");
        assert_eq!(lease_host("odd"), "odd");
    }
}
