//! THE table of parameters sluice supports: name, Postfix default, value
//! type and a one-line description (used by `sluice config -d` and the
//! generated reference `conf/README.md`), plus the per-transport suffixes
//! (`<transport>_destination_concurrency_limit`, ...) and the reasons given
//! for Postfix parameters sluice does not implement.
//!
//! Owns the list and nothing else: no parsing, no I/O. A parameter that is
//! not here cannot be read through [`super::Config`] (the accessors panic,
//! which tests catch), so adding a feature means adding its row here first.

use std::collections::HashSet;
use std::sync::LazyLock;

/// The type of a parameter's value, checked when the configuration loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text.
    Str,
    /// `yes` or `no`.
    Bool,
    /// A decimal integer, at least `min`.
    Int { min: i64 },
    /// A time value; a bare number is in `unit` (`s`, `m`, `h`, `d`, `w`);
    /// `ms` is accepted when `ms` is true (sluice's own parameters only);
    /// zero is refused when `nonzero` is true (Postfix's minimum of 1 for
    /// timeouts and retry intervals: a zero `smtpd_timeout` would time
    /// out every client).
    Time { unit: char, ms: bool, nonzero: bool },
    /// A byte count.
    Size,
    /// A list split on commas and/or white space.
    List,
    /// A list (as `List`) of some of the listed words, case-insensitive.
    Words(&'static [&'static str]),
    /// A list of lookup tables (`type:name`).
    Maps,
    /// An SMTP restriction list (`permit_mynetworks, reject_unauth_destination, ...`).
    Restrictions,
    /// A domain match list (names, `.names`, `/files`, `type:table`, `!negation`).
    DomainList,
    /// A network match list (`net/mask`, `[ipv6]/mask`, `/files`, `type:table`, `!negation`).
    HostList,
    /// One of the listed words.
    Enum(&'static [&'static str]),
    /// `0` or `N/s`, `N/m`, `N/h`.
    Rate,
    /// Empty (off) or `address:port`.
    Listen,
    /// `transport` or `transport:nexthop`.
    Transport,
    /// A next-hop destination (`[host]:port`, `host`, ...), or empty.
    NextHop,
    /// A port number or service name.
    Port,
    /// A Postfix compatibility level (`2`, `3.6`).
    Level,
    /// `inet_interfaces` syntax (`all`, `loopback-only`, addresses).
    Interfaces,
    /// IP addresses or host names (empty: none).
    Addresses,
    /// `inet_protocols` syntax (`all`, `ipv4`, `ipv6`).
    Protocols,
    /// TLS protocol versions (`>=TLSv1.2`, `!SSLv2, !SSLv3`).
    TlsProtocols,
    /// DNS server addresses (`address`, `address:port`, `[ipv6]:port`).
    NameServers,
    /// `redis://` or `rediss://` URLs (`sluice_fleet_redis`).
    RedisUrls,
}

impl Kind {
    /// A short name for the reference.
    pub fn describe(&self) -> String {
        match self {
            Kind::Str => "text".into(),
            Kind::Bool => "yes/no".into(),
            Kind::Int { min } => format!("integer ≥ {min}"),
            Kind::Time { unit, ms, nonzero } => {
                let units = if *ms { "ms/s/m/h/d/w" } else { "s/m/h/d/w" };
                let least = if *nonzero { ", > 0" } else { "" };
                format!("time ({units}; bare number = {unit}{least})")
            }
            Kind::Size => "bytes".into(),
            Kind::List => "list".into(),
            Kind::Words(words) => format!("list of {}", words.join(", ")),
            Kind::Maps => "lookup tables".into(),
            Kind::Restrictions => "restriction list".into(),
            Kind::DomainList => "domain list".into(),
            Kind::HostList => "network list".into(),
            Kind::Enum(words) => {
                words.iter().map(|w| if w.is_empty() { "(empty)" } else { w }).collect::<Vec<_>>().join(" | ")
            }
            Kind::Rate => "rate (0, N/s, N/m, N/h)".into(),
            Kind::Listen => "address:port or empty".into(),
            Kind::Transport => "transport[:nexthop]".into(),
            Kind::NextHop => "next hop".into(),
            Kind::Port => "port or service name".into(),
            Kind::Level => "compatibility level".into(),
            Kind::Interfaces => "all | loopback-only | addresses".into(),
            Kind::Addresses => "addresses or host names".into(),
            Kind::Protocols => "all | ipv4 | ipv6".into(),
            Kind::TlsProtocols => "TLS protocols (>=TLSv1.2, !TLSv1.1, ...)".into(),
            Kind::NameServers => "addresses (ip, ip:port, [ipv6]:port)".into(),
            Kind::RedisUrls => "redis:// or rediss:// URLs".into(),
        }
    }
}

/// A parameter's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    /// A fixed text, expanded like any value (`$myhostname ESMTP $mail_name`).
    Text(&'static str),
    /// Computed when the configuration loads; the text says how.
    Computed(&'static str),
}

/// Sections of the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Identity,
    Listening,
    Relay,
    Limits,
    Tls,
    Routing,
    Queue,
    Delivery,
    Client,
    ClientTls,
    Milters,
    Auth,
    Sluice,
}

impl Group {
    pub fn title(&self) -> &'static str {
        match self {
            Group::Identity => "Identity and files",
            Group::Listening => "Listening",
            Group::Relay => "Relay control and recipient validation",
            Group::Limits => "SMTP server limits and safety",
            Group::Tls => "SMTP server TLS",
            Group::Routing => "Routing",
            Group::Queue => "Queue",
            Group::Delivery => "Delivery scheduling (per transport)",
            Group::Client => "LMTP/SMTP client",
            Group::ClientTls => "LMTP/SMTP client TLS",
            Group::Milters => "Content filters (milters)",
            Group::Auth => "Sender authentication (SPF, DKIM, DMARC, ARC)",
            Group::Sluice => "sluice additions",
        }
    }

    pub const ALL: [Group; 13] = [
        Group::Identity,
        Group::Listening,
        Group::Relay,
        Group::Limits,
        Group::Tls,
        Group::Routing,
        Group::Queue,
        Group::Delivery,
        Group::Client,
        Group::ClientTls,
        Group::Milters,
        Group::Auth,
        Group::Sluice,
    ];
}

/// One supported parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub default: Default,
    pub kind: Kind,
    pub group: Group,
    /// One line: what it means in sluice.
    pub description: &'static str,
}

const fn p(
    name: &'static str,
    default: &'static str,
    kind: Kind,
    group: Group,
    description: &'static str,
) -> Param {
    Param { name, default: Default::Text(default), kind, group, description }
}

const fn computed(
    name: &'static str,
    how: &'static str,
    kind: Kind,
    group: Group,
    description: &'static str,
) -> Param {
    Param { name, default: Default::Computed(how), kind, group, description }
}

const INT0: Kind = Kind::Int { min: 0 };
const INT1: Kind = Kind::Int { min: 1 };
const CODE: Kind = Kind::Int { min: 200 };
const SECS: Kind = Kind::Time { unit: 's', ms: false, nonzero: false };
/// Seconds, at least one: timeouts and intervals where Postfix's minimum is 1.
const SECS1: Kind = Kind::Time { unit: 's', ms: false, nonzero: true };
const SECS_MS: Kind = Kind::Time { unit: 's', ms: true, nonzero: false };
/// The words milter_default_action accepts.
const MILTER_DEFAULTS: &[&str] = super::milters::MilterDefault::WORDS;
const SECS_MS1: Kind = Kind::Time { unit: 's', ms: true, nonzero: true };

use Group::*;
use Kind::*;

/// Every parameter sluice supports, with Postfix's default unless the
/// description says otherwise.
pub static PARAMS: &[Param] = &[
    // Identity and files.
    computed(
        "myhostname",
        "the system host name; .$mydomain (or .localdomain) is appended when it has no dot",
        Str,
        Identity,
        "The internet host name of this mail system, used in the greeting, EHLO/LHLO and Received: headers.",
    ),
    computed(
        "mydomain",
        "$myhostname without its first label, or localdomain",
        Str,
        Identity,
        "The internet domain name of this mail system.",
    ),
    p(
        "myorigin",
        "$myhostname",
        Str,
        Identity,
        "The domain appended to an address without @ (such a recipient is routed as user@$myorigin).",
    ),
    p(
        "mail_name",
        "sluice",
        Str,
        Identity,
        "The mail system name in the SMTP greeting and Received: headers (Postfix's default is Postfix).",
    ),
    p(
        "smtpd_banner",
        "$myhostname ESMTP $mail_name",
        Str,
        Identity,
        "The text after 220 in the SMTP greeting; it must start with $myhostname.",
    ),
    p(
        "compatibility_level",
        "3.6",
        Level,
        Identity,
        "sluice always uses the defaults of Postfix compatibility level 2 and later (Postfix's default level is 0); a lower setting is warned about.",
    ),
    computed(
        "config_directory",
        "the -c DIR directory (/etc/sluice)",
        Str,
        Identity,
        "The configuration directory; set by -c DIR, not in main.cf. Relative table paths resolve against it.",
    ),
    p(
        "queue_directory",
        "/var/spool/sluice",
        Str,
        Identity,
        "The queue (RocksDB) directory (Postfix: /var/spool/postfix); a relative path is relative to sluice's working directory. Relative unix: next hops resolve against it.",
    ),
    p(
        "stress",
        "",
        Str,
        Identity,
        "yes while an SMTP listener is under stress, as Postfix's master sets it: from the moment a session takes the listener's last free slot (master.cf maxproc) and for 1000 s after the last time it did, new sessions get the listener's configuration expanded with stress = yes, so every ${stress?...} value applies (smtpd_timeout 10s, smtpd_hard_error_limit 1, smtpd_junk_command_limit 1, smtpd_starttls_timeout 10s). Empty otherwise; leave it unset in main.cf.",
    ),
    p(
        "maillog_file",
        "",
        Str,
        Identity,
        "File the log lines are appended to; empty: standard error (the journal under systemd).",
    ),
    p(
        "service_name",
        "",
        Str,
        Identity,
        "The master.cf service name; set in each service's own configuration, usable as $service_name in -o values.",
    ),
    // Listening.
    p(
        "inet_interfaces",
        "all",
        Interfaces,
        Listening,
        "Addresses the SMTP listeners bind when their master.cf service names no host: all, loopback-only, or IP addresses.",
    ),
    p(
        "inet_protocols",
        "all",
        Protocols,
        Listening,
        "Address families used for listening and for mynetworks: all, ipv4, ipv6 (or ipv4, ipv6).",
    ),
    p(
        "proxy_interfaces",
        "",
        Addresses,
        Listening,
        "Addresses of a proxy or NAT that passes mail on to this host: delivery to one of them (port 25, or a port sluice listens on) is mail that loops back to this host.",
    ),
    // Relay control.
    computed(
        "mynetworks",
        "per mynetworks_style: the machine's own addresses (host), their subnets (subnet) or classful networks (class)",
        HostList,
        Relay,
        "Trusted client networks for permit_mynetworks: net/mask, [ipv6]/mask, /file names, type:table, !negation.",
    ),
    p(
        "mynetworks_style",
        "host",
        Enum(&["host", "subnet", "class"]),
        Relay,
        "How the mynetworks default is computed when mynetworks is not set.",
    ),
    p(
        "relay_domains",
        "",
        DomainList,
        Relay,
        "Domains this MX accepts mail for and relays (names, /file names, type:table); the default accepts none.",
    ),
    p(
        "relay_recipient_maps",
        "",
        Maps,
        Relay,
        "Valid recipients in relay_domains (user@domain, or @domain for any); when set, others get 550 at RCPT.",
    ),
    p(
        "virtual_alias_maps",
        "",
        Maps,
        Relay,
        "Aliases expanded at RCPT (virtual(5)): an address, user@domain or @domain, maps to one or more addresses; the targets are stored in the envelope and routed.",
    ),
    p(
        "virtual_alias_domains",
        "$virtual_alias_maps",
        DomainList,
        Relay,
        "Domains whose addresses exist only as aliases: accepted for relay, and an address virtual_alias_maps does not list gets 550 5.1.1 at RCPT.",
    ),
    p(
        "virtual_alias_recursion_limit",
        "1000",
        INT1,
        Relay,
        "How many times one address may be rewritten by virtual_alias_maps; past it the recipient gets 451 4.6.0 (an alias loop).",
    ),
    p(
        "virtual_alias_expansion_limit",
        "1000",
        INT1,
        Relay,
        "The most addresses one recipient may expand to through virtual_alias_maps; past it the recipient gets 451 4.6.0.",
    ),
    p(
        "unknown_virtual_alias_reject_code",
        "550",
        CODE,
        Relay,
        "Reply code for an address in virtual_alias_domains that virtual_alias_maps does not list.",
    ),
    p(
        "propagate_unmatched_extensions",
        "canonical, virtual",
        Words(&["canonical", "virtual", "alias", "forward", "include", "generic"]),
        Relay,
        "Where an address extension matched through user@domain is carried into the result; sluice applies only virtual (virtual_alias_maps).",
    ),
    p(
        "parent_domain_matches_subdomains",
        "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,qmqpd_authorized_clients,relay_domains,smtpd_access_maps",
        List,
        Relay,
        "Features where a domain name also matches its subdomains; elsewhere a .domain pattern is needed (e.g. transport_maps).",
    ),
    p(
        "recipient_delimiter",
        "",
        Str,
        Relay,
        "Characters that separate a user name from an extension (user+ext); empty: no extensions.",
    ),
    p(
        "smtpd_relay_restrictions",
        "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
        Restrictions,
        Relay,
        "Relay control at RCPT, before smtpd_recipient_restrictions; permit_sasl_authenticated never matches (no SASL).",
    ),
    p(
        "smtpd_recipient_restrictions",
        "",
        Restrictions,
        Relay,
        "Restrictions at RCPT TO, after smtpd_relay_restrictions.",
    ),
    p(
        "smtpd_client_restrictions",
        "",
        Restrictions,
        Relay,
        "Restrictions on the client address, evaluated at RCPT TO.",
    ),
    p(
        "smtpd_helo_restrictions",
        "",
        Restrictions,
        Relay,
        "Restrictions on the HELO/EHLO name, evaluated at RCPT TO.",
    ),
    p(
        "smtpd_sender_restrictions",
        "",
        Restrictions,
        Relay,
        "Restrictions on the MAIL FROM address, evaluated at RCPT TO.",
    ),
    p("smtpd_data_restrictions", "", Restrictions, Relay, "Restrictions evaluated at DATA/BDAT."),
    p(
        "smtpd_reject_unlisted_recipient",
        "yes",
        Bool,
        Relay,
        "Reject recipients in relay_domains that relay_recipient_maps does not list, even without reject_unlisted_recipient.",
    ),
    p(
        "relay_domains_reject_code",
        "554",
        CODE,
        Relay,
        "Reply code for a recipient domain this host does not relay for (Relay access denied).",
    ),
    p(
        "unknown_relay_recipient_reject_code",
        "550",
        CODE,
        Relay,
        "Reply code for a recipient not in relay_recipient_maps.",
    ),
    p(
        "unknown_client_reject_code",
        "450",
        CODE,
        Relay,
        "Reply code of reject_unknown_client_hostname and reject_unknown_reverse_client_hostname when the name is known not to exist or not to match (a temporary DNS failure always gets 450).",
    ),
    p(
        "non_fqdn_reject_code",
        "504",
        CODE,
        Relay,
        "Reply code of reject_non_fqdn_sender, reject_non_fqdn_recipient and reject_non_fqdn_helo_hostname.",
    ),
    p("invalid_hostname_reject_code", "501", CODE, Relay, "Reply code of reject_invalid_helo_hostname."),
    p(
        "unknown_hostname_reject_code",
        "450",
        CODE,
        Relay,
        "Reply code of reject_unknown_helo_hostname when the HELO name has no address and no MX record (a failed lookup defers with 450 unless something else rejects).",
    ),
    p(
        "unknown_address_reject_code",
        "450",
        CODE,
        Relay,
        "Reply code of reject_unknown_sender_domain when the domain has no MX and no address record (a failed lookup defers with 450 unless something else rejects).",
    ),
    p(
        "nullmx_reject_code",
        "556",
        CODE,
        Relay,
        "Reply code of reject_unknown_sender_domain for a domain whose null MX (RFC 7505) says it takes no mail.",
    ),
    p(
        "unverified_recipient_reject_code",
        "450",
        CODE,
        Relay,
        "Reply code of reject_unverified_recipient when the recipient's own mailbox server refused the address for good (5xx to RCPT TO at the probe). Postfix's default 450 keeps a mistake recoverable; set 550 once verification works.",
    ),
    p(
        "unverified_recipient_defer_code",
        "450",
        CODE,
        Relay,
        "Reply code of reject_unverified_recipient when the mailbox server refused the address for now (4xx to RCPT TO at the probe).",
    ),
    p(
        "unverified_recipient_tempfail_action",
        "defer_if_permit",
        Kind::Enum(&["reject", "defer", "defer_if_permit", "defer_if_reject"]),
        Relay,
        "What reject_unverified_recipient does when no answer can be had in time without loading the backend (no concurrency slot within sluice_address_verify_slot_wait, backend paused, breaker open, probe still running): 450 4.1.1 \"unverified address\" as the action says (reject uses unverified_recipient_reject_code).",
    ),
    p(
        "unverified_recipient_reject_reason",
        "",
        Kind::Str,
        Relay,
        "Text after \"Recipient address rejected:\" in reject_unverified_recipient's refusals; empty: Postfix's \"undeliverable address: ...\" / \"unverified address: ...\" with the server's answer.",
    ),
    p(
        "address_verify_sender",
        "$double_bounce_sender",
        Kind::Str,
        Relay,
        "MAIL FROM of verification probes (qualified with $myorigin when it has no domain); `<>` sends the null sender.",
    ),
    p(
        "double_bounce_sender",
        "double-bounce",
        Kind::Str,
        Relay,
        "Sender address of verification probes by default (address_verify_sender); sluice sends no double bounces.",
    ),
    p(
        "address_verify_positive_expire_time",
        "31d",
        Kind::Time { unit: 'd', ms: false, nonzero: true },
        Relay,
        "How long a deliverable answer is believed; after that the address is probed again before the client gets an answer.",
    ),
    p(
        "address_verify_positive_refresh_time",
        "7d",
        Kind::Time { unit: 'd', ms: false, nonzero: true },
        Relay,
        "Age after which a deliverable answer is refreshed by a probe in the background while the cached answer is used.",
    ),
    p(
        "address_verify_negative_cache",
        "yes",
        Kind::Bool,
        Relay,
        "Whether undeliverable answers are cached (no: every RCPT for an unknown address probes the backend).",
    ),
    p(
        "address_verify_negative_expire_time",
        "3d",
        Kind::Time { unit: 'd', ms: false, nonzero: true },
        Relay,
        "How long an undeliverable answer is believed.",
    ),
    p(
        "address_verify_negative_refresh_time",
        "3h",
        Kind::Time { unit: 'h', ms: false, nonzero: true },
        Relay,
        "Age after which an undeliverable answer is refreshed in the background while the cached answer is used.",
    ),
    p(
        "address_verify_poll_count",
        "3",
        INT1,
        Relay,
        "With address_verify_poll_delay, how long a client waits at RCPT for a probe: poll_count x poll_delay (Postfix's smtpd polls verify(8) that often; sluice probes synchronously and waits that long at most). A probe still running then answers the client with the tempfail action and finishes in the background, caching its answer for the client's retry.",
    ),
    p("address_verify_poll_delay", "3s", SECS1, Relay, "See address_verify_poll_count."),
    p(
        "address_verify_cache_cleanup_interval",
        "12h",
        Kind::Time { unit: 's', ms: false, nonzero: false },
        Relay,
        "How often expired verification answers are removed from the queue's cache (0: never; sluice_address_verify_cache_limit still bounds it at start).",
    ),
    p(
        "sluice_address_verify_cache_limit",
        "100000",
        INT1,
        Sluice,
        "Most verification answers kept; a cleanup past it removes the oldest. A cleanup also runs when this many answers were written since the last one.",
    ),
    p(
        "sluice_address_verify_alias_targets",
        "10",
        INT1,
        Sluice,
        "Most targets of one virtual alias that reject_unverified_recipient probes (the first ones of its expansion); the alias is accepted when each of them is deliverable. A larger expansion is a list, and probing every member at each RCPT would load the mailbox servers the probes are meant to spare.",
    ),
    p(
        "sluice_address_verify_slot_wait",
        "500ms",
        SECS_MS,
        Sluice,
        "How long a verification probe waits for a concurrency slot of the recipient's backend (or its rate limit) before the client gets the tempfail action instead: a busy backend is not given more work.",
    ),
    p(
        "maps_rbl_reject_code",
        "554",
        CODE,
        Relay,
        "Reply code of reject_rbl_client and the reject_rhsbl_* restrictions when a DNS blocklist lists the client or name. reject_rbl_client and permit_dnswl_client lists are asked when the client connects, the reject_rhsbl_* ones when the restriction is reached; each within sluice_peername_lookup_timeout, and one that fails or is late lists nothing.",
    ),
    p("access_map_reject_code", "554", CODE, Relay, "Reply code when an access table says REJECT."),
    p("access_map_defer_code", "450", CODE, Relay, "Reply code when an access table says DEFER."),
    // SMTP server limits.
    p(
        "message_size_limit",
        "10240000",
        Size,
        Limits,
        "Largest message accepted, in bytes (announced with SIZE; 0: no limit).",
    ),
    p("smtpd_recipient_limit", "1000", INT1, Limits, "Most recipients accepted per message."),
    p(
        "smtpd_timeout",
        "${stress?{10}:{300}}s",
        SECS1,
        Limits,
        "How long the SMTP server waits for a client command or data.",
    ),
    p(
        "smtpd_hard_error_limit",
        "${stress?{1}:{20}}",
        INT1,
        Limits,
        "Errors in one session after which the server disconnects.",
    ),
    p(
        "smtpd_soft_error_limit",
        "10",
        INT0,
        Limits,
        "Errors in one session after which each further error reply is delayed by smtpd_error_sleep_time.",
    ),
    p(
        "smtpd_error_sleep_time",
        "1s",
        SECS,
        Limits,
        "Delay before an error reply once smtpd_soft_error_limit is reached.",
    ),
    p(
        "smtpd_junk_command_limit",
        "${stress?{1}:{100}}",
        INT1,
        Limits,
        "NOOP, VRFY, RSET and similar commands allowed in one session before disconnecting.",
    ),
    p(
        "smtpd_min_data_rate",
        "500",
        INT0,
        Limits,
        "Least bytes per second a client must send during DATA/BDAT (0: no minimum); slower clients time out.",
    ),
    p(
        "line_length_limit",
        "2048",
        Kind::Int { min: 512 },
        Limits,
        "Longest SMTP command line accepted, in bytes.",
    ),
    p(
        "header_size_limit",
        "102400",
        INT1,
        Limits,
        "Most bytes of message headers examined (Received: count, loop detection).",
    ),
    p("smtputf8_enable", "yes", Bool, Limits, "Announce and accept SMTPUTF8 (RFC 6531)."),
    p(
        "smtpd_forbid_unauth_pipelining",
        "yes",
        Bool,
        Limits,
        "Disconnect a client that sends commands ahead of time without PIPELINING allowing it (default as in Postfix 3.9).",
    ),
    p(
        "smtpd_client_connection_count_limit",
        "50",
        INT0,
        Limits,
        "Simultaneous connections per client (0: no limit; a client is an address, or a network per smtpd_client_ipv4_prefix_length and smtpd_client_ipv6_prefix_length); mynetworks are exempt via smtpd_client_event_limit_exceptions.",
    ),
    p(
        "smtpd_client_connection_rate_limit",
        "0",
        INT0,
        Limits,
        "Connections per client (see smtpd_client_connection_count_limit) per anvil_rate_time_unit (0: no limit).",
    ),
    p(
        "smtpd_client_message_rate_limit",
        "0",
        INT0,
        Limits,
        "Messages per client (see smtpd_client_connection_count_limit) per anvil_rate_time_unit (0: no limit).",
    ),
    p("anvil_rate_time_unit", "60s", SECS1, Limits, "The time unit of the per-client rate limits."),
    p(
        "smtpd_client_ipv4_prefix_length",
        "32",
        INT0,
        Limits,
        "The IPv4 network (prefix length, 0 to 32) counted as one client by the per-client connection count and the connection and message rate limits (as in Postfix 3.8).",
    ),
    p(
        "smtpd_client_ipv6_prefix_length",
        "84",
        INT0,
        Limits,
        "The IPv6 network (prefix length, 0 to 128) counted as one client by the per-client limits: a host holds a /64 or more, so counting single addresses would let it open as many sessions as it likes (default as in Postfix 3.8).",
    ),
    p(
        "smtpd_client_event_limit_exceptions",
        "$mynetworks",
        HostList,
        Limits,
        "Clients exempt from the per-client connection and rate limits.",
    ),
    p(
        "smtpd_forbid_bare_newline",
        "normalize",
        Enum(&["no", "normalize", "yes", "reject"]),
        Limits,
        "Bare LF in SMTP input: normalize (= yes) treats it as end of line and never as end of data; reject refuses it; no accepts it (default as in Postfix 3.9).",
    ),
    p(
        "smtpd_forbid_bare_newline_exclusions",
        "$mynetworks",
        HostList,
        Limits,
        "Clients that smtpd_forbid_bare_newline = reject does not refuse; their bare CR and LF are normalized instead (sluice: Postfix exempts them entirely, but relayed mail must not reach the mailbox servers with bare line ends, whoever sent it).",
    ),
    p(
        "smtpd_forbid_bare_newline_reject_code",
        "550",
        CODE,
        Limits,
        "Reply code for smtpd_forbid_bare_newline = reject.",
    ),
    p("smtpd_helo_required", "no", Bool, Limits, "Require HELO or EHLO before MAIL FROM."),
    p(
        "smtpd_peername_lookup",
        "yes",
        Bool,
        Limits,
        "Look up each client's reverse name and confirm it with a forward lookup (no: every client is unknown, as is any whose lookup fails or times out).",
    ),
    p(
        "disable_vrfy_command",
        "yes",
        Bool,
        Limits,
        "Refuse the VRFY command (Postfix's default is no; an MX has no reason to confirm addresses to the internet).",
    ),
    p(
        "smtpd_policy_service_timeout",
        "100s",
        SECS1,
        Relay,
        "Longest exchange with a check_policy_service server (connect, request, answer); past it the default action applies.",
    ),
    p(
        "smtpd_policy_service_default_action",
        "451 4.3.5 Server configuration problem",
        Str,
        Relay,
        "The access(5) result used when a policy server cannot be reached, times out or answers without action=.",
    ),
    p(
        "header_checks",
        "",
        Maps,
        Limits,
        "Patterns (regexp:, pcre:) matched against each logical header line of incoming mail; actions REJECT, DISCARD, HOLD, WARN, DUNNO/OK. Actions that would change the message (IGNORE, PREPEND, REPLACE, ...) are not supported: mail is relayed unchanged.",
    ),
    p(
        "body_checks",
        "",
        Maps,
        Limits,
        "Patterns (regexp:, pcre:) matched against each line of the message body, i.e. every line after the header section as sent (no MIME decoding: part headers and encoded content are lines too), up to body_checks_size_limit bytes; lines longer than line_length_limit are checked in pieces of that size. Actions as header_checks.",
    ),
    p("body_checks_size_limit", "51200", Size, Limits, "How many bytes of the body body_checks inspect."),
    p(
        "hopcount_limit",
        "50",
        INT1,
        Limits,
        "Most Received: headers a message may have; more is a mail loop and is rejected.",
    ),
    p(
        "default_process_limit",
        "100",
        INT1,
        Limits,
        "Limit used for a master.cf maxproc of '-' (sessions per smtpd service, deliveries per transport).",
    ),
    // Milters (Postfix's MILTER_README).
    p(
        "smtpd_milters",
        "",
        List,
        Milters,
        "Milters asked about every SMTP session, in order: inet:host:port, unix:/path (relative: under queue_directory), or { inet:host:port, connect_timeout=..., command_timeout=..., content_timeout=..., default_action=..., protocol=... } with per-milter settings. Per listener with master.cf's -o smtpd_milters=.",
    ),
    p(
        "milter_protocol",
        "6",
        Str,
        Milters,
        "The milter protocol version sluice announces (2, 3, 4 or 6), optionally with no_header_reply.",
    ),
    p(
        "milter_default_action",
        "tempfail",
        Enum(MILTER_DEFAULTS),
        Milters,
        "What a milter that cannot be reached, times out or breaks the protocol means for the mail: accept (as if it were not configured), reject (550 5.5.0), tempfail (451 4.7.1), quarantine (accept and hold), shutdown (421 and close). Postfix 3.7's default.",
    ),
    p("milter_connect_timeout", "30s", SECS1, Milters, "Time limit to connect to a milter."),
    p(
        "milter_command_timeout",
        "30s",
        SECS1,
        Milters,
        "Time limit for the option negotiation and for a milter's reply to CONNECT, HELO, MAIL, RCPT, DATA and unknown commands.",
    ),
    p(
        "milter_content_timeout",
        "300s",
        SECS1,
        Milters,
        "Time limit for sending each packet of message content to a milter and for each of its replies at the end of the message.",
    ),
    p("milter_connect_macros", "j {daemon_name} {daemon_addr} v _", List, Milters, "Macros sent at CONNECT."),
    p(
        "milter_helo_macros",
        "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
        List,
        Milters,
        "Macros sent at HELO/EHLO.",
    ),
    p(
        "milter_mail_macros",
        "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
        List,
        Milters,
        "Macros sent at MAIL FROM (sluice has no SASL: the {auth_*} macros are never set).",
    ),
    p(
        "milter_rcpt_macros",
        "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
        List,
        Milters,
        "Macros sent at RCPT TO.",
    ),
    p("milter_data_macros", "i", List, Milters, "Macros sent at DATA."),
    p("milter_end_of_header_macros", "i", List, Milters, "Macros sent at the end of the message header."),
    p("milter_end_of_data_macros", "i", List, Milters, "Macros sent at the end of the message."),
    p("milter_unknown_command_macros", "", List, Milters, "Macros sent with an unknown SMTP command."),
    p("milter_macro_daemon_name", "$myhostname", Str, Milters, "The {daemon_name} macro."),
    p(
        "milter_macro_v",
        concat!("$mail_name ", env!("CARGO_PKG_VERSION")),
        Str,
        Milters,
        "The v macro (Postfix's default is $mail_name $mail_version).",
    ),
    p(
        "milter_macro_defaults",
        "",
        Str,
        Milters,
        "name=value pairs (or { name = value }) sent for macros sluice has no value for.",
    ),
    p(
        "milter_header_checks",
        "",
        Maps,
        Milters,
        "Patterns matched against each header a milter adds, inserts or changes, with the header_checks actions REJECT, DISCARD, HOLD, WARN and IGNORE (the header is not added), DUNNO/OK; others are taken as DUNNO.",
    ),
    p(
        "sluice_milter_failure_threshold",
        "3",
        INT1,
        Milters,
        "Failures in a row (connect refused, timeout, protocol error) after which a milter is not contacted for sluice_milter_cooldown: milter_default_action applies at once, so a down milter costs sessions nothing. Logged once when it starts and ends.",
    ),
    p(
        "sluice_milter_cooldown",
        "10s",
        SECS_MS,
        Milters,
        "How long a failing milter is left alone before one session tries it again; doubles after each failed try, to at most 8 times this.",
    ),
    // TLS.
    p(
        "smtpd_tls_cert_file",
        "",
        Str,
        Tls,
        "PEM file with the server certificate (and chain) for STARTTLS; in Postfix's naming the RSA one, beside smtpd_tls_eccert_file.",
    ),
    p(
        "smtpd_tls_chain_files",
        "",
        List,
        Tls,
        "PEM files, each holding a private key and then its certificate chain, leaf first (Postfix's preferred form), one per key algorithm (e.g. ECDSA and RSA); when set they replace smtpd_tls_cert_file, smtpd_tls_key_file, smtpd_tls_eccert_file and smtpd_tls_eckey_file. Each client gets the ECDSA (or Ed25519) certificate when it can verify it, else the RSA one.",
    ),
    p(
        "smtpd_tls_eccert_file",
        "",
        Str,
        Tls,
        "PEM file with the server's ECDSA certificate (and chain), offered beside smtpd_tls_cert_file to clients that can verify it.",
    ),
    p(
        "smtpd_tls_eckey_file",
        "$smtpd_tls_eccert_file",
        Str,
        Tls,
        "PEM file with the private key for smtpd_tls_eccert_file.",
    ),
    p(
        "smtpd_tls_key_file",
        "$smtpd_tls_cert_file",
        Str,
        Tls,
        "PEM file with the private key for smtpd_tls_cert_file.",
    ),
    p(
        "smtpd_tls_security_level",
        "",
        Enum(&["", "none", "may", "encrypt"]),
        Tls,
        "none (or empty): no STARTTLS; may: offer STARTTLS; encrypt: require it before MAIL.",
    ),
    p(
        "smtpd_tls_protocols",
        ">=TLSv1",
        TlsProtocols,
        Tls,
        "TLS protocols offered with smtpd_tls_security_level = may, in Postfix's syntax (>=TLSv1.2, <=TLSv1.3, !TLSv1.2, ...). sluice speaks TLSv1.2 and TLSv1.3 only; a value that leaves neither is an error.",
    ),
    p(
        "tls_preempt_cipherlist",
        "no",
        Bool,
        Tls,
        "yes: the SMTP server picks the TLS cipher suite by its own order, AES-128-GCM first (then AES-256-GCM, then ChaCha20-Poly1305), rather than by the client's. no: the client's order, as Postfix's default.",
    ),
    p(
        "smtpd_tls_mandatory_protocols",
        ">=TLSv1",
        TlsProtocols,
        Tls,
        "TLS protocols offered with smtpd_tls_security_level = encrypt, as smtpd_tls_protocols.",
    ),
    p(
        "smtpd_discard_ehlo_keywords",
        "",
        List,
        Limits,
        "EHLO keywords not to announce (pipelining, size, vrfy, starttls, enhancedstatuscodes, 8bitmime, dsn, smtputf8, chunking, binarymime), each then also refused where a client could use it anyway: STARTTLS and BDAT get 502, DSN and SMTPUTF8 parameters 555, pipelining counts as unauthorized, replies lose their enhanced status codes. Each session that had keywords removed logs them, unless the list holds silent-discard.",
    ),
    p(
        "smtpd_upstream_proxy_protocol",
        "",
        Enum(&["", "haproxy"]),
        Listening,
        "haproxy: every connection starts with HAProxy's PROXY protocol header (version 1 or 2) naming the real client, as a load balancer in front sends it; limits, restrictions, logs and Received: then see that client. A connection without a valid header is dropped, and so is one from an address outside sluice_upstream_proxy_networks. Set it per listener with -o in master.cf.",
    ),
    p(
        "sluice_upstream_proxy_networks",
        "127.0.0.0/8 [::1]/128",
        HostList,
        Listening,
        "With smtpd_upstream_proxy_protocol = haproxy: the load balancers allowed to name the client. A connection from any other address is closed before a byte is read or sent (it could claim to come from mynetworks); list the load balancer's addresses when it runs on another host.",
    ),
    p(
        "smtpd_upstream_proxy_timeout",
        "5s",
        SECS1,
        Listening,
        "Time limit for reading the PROXY protocol header.",
    ),
    p(
        "smtpd_starttls_timeout",
        "${stress?{10}:{300}}s",
        SECS1,
        Tls,
        "Time limit for the TLS handshake after STARTTLS.",
    ),
    // Routing.
    p(
        "transport_maps",
        "",
        Maps,
        Routing,
        "Per-recipient routing as transport(5): address, domain, .domain or * → transport:nexthop.",
    ),
    p(
        "default_transport",
        "smtp",
        Transport,
        Routing,
        "Transport (and optional next hop) for destinations not in relay_domains.",
    ),
    p(
        "relay_transport",
        "relay",
        Transport,
        Routing,
        "Transport (and optional next hop) for relay_domains without a transport_maps entry.",
    ),
    p(
        "relayhost",
        "",
        NextHop,
        Routing,
        "Default next hop when the transport gives none: [host]:port (no MX lookup) or domain (MX lookup).",
    ),
    p("smtp_tcp_port", "smtp", Port, Routing, "Default port of SMTP next hops."),
    p("lmtp_tcp_port", "24", Port, Routing, "Default port of LMTP next hops."),
    // Queue.
    p(
        "soft_bounce",
        "no",
        Bool,
        Queue,
        "Safety net: with yes, nothing is refused or bounced for good. The SMTP server answers 4xx where it would answer 5xx (4.Y.Z for 5.Y.Z), delivery defers a recipient a mailbox server refuses with 5xx, and mail past maximal_queue_lifetime stays queued instead of bouncing. Logs show the softened replies, with status=deferred.",
    ),
    p(
        "maximal_queue_lifetime",
        "5d",
        Kind::Time { unit: 'd', ms: false, nonzero: false },
        Queue,
        "How long a recipient may stay deferred before it bounces.",
    ),
    p(
        "bounce_queue_lifetime",
        "5d",
        Kind::Time { unit: 'd', ms: false, nonzero: false },
        Queue,
        "maximal_queue_lifetime for bounces (null sender).",
    ),
    p("minimal_backoff_time", "300s", SECS1, Queue, "Shortest wait before retrying a deferred recipient."),
    p("maximal_backoff_time", "4000s", SECS1, Queue, "Longest wait before retrying a deferred recipient."),
    p(
        "queue_run_delay",
        "300s",
        SECS1,
        Queue,
        "How often the deferred queue is scanned for mail that is due.",
    ),
    p(
        "delay_warning_time",
        "0h",
        Kind::Time { unit: 'h', ms: false, nonzero: false },
        Queue,
        "Send the sender a delay notice after this long (0: never).",
    ),
    p(
        "bounce_size_limit",
        "50000",
        INT0,
        Queue,
        "Largest original message (bytes) a RET=FULL failure report returns whole; larger ones come back as headers only.",
    ),
    p(
        "qmgr_message_active_limit",
        "20000",
        INT1,
        Queue,
        "Most messages the scheduler holds in memory at once; the rest stay on disk until there is room.",
    ),
    p(
        "queue_minfree",
        "0",
        Size,
        Queue,
        "Free bytes the queue file system must keep; below it new mail gets 452 4.3.1. As in Postfix, at least 1.5 x message_size_limit is kept whatever this says, plus the SIZE a client declares at MAIL; sluice also always keeps 64 MiB (new mail) and 32 MiB (any queue write) so its database never runs out of space itself. When writes fail anyway (a disk filled by another program, a database error), new mail gets 452 4.3.1 until a write works again, which sluice checks every second.",
    ),
    // Delivery scheduling.
    p(
        "default_destination_concurrency_limit",
        "20",
        INT1,
        Delivery,
        "Most parallel deliveries to one destination (per transport: <transport>_destination_concurrency_limit).",
    ),
    p(
        "initial_destination_concurrency",
        "5",
        INT1,
        Delivery,
        "Parallel deliveries to a destination to start with, and to restart with when its circuit breaker closes, unless the destination was found to take fewer before (per transport: <transport>_initial_destination_concurrency).",
    ),
    p(
        "default_destination_rate_delay",
        "0s",
        SECS,
        Delivery,
        "Pause between deliveries to one destination; non-zero means one at a time (per transport: <transport>_destination_rate_delay).",
    ),
    p(
        "default_destination_recipient_limit",
        "50",
        INT1,
        Delivery,
        "Most recipients per delivery (per transport: <transport>_destination_recipient_limit).",
    ),
    p(
        "default_destination_concurrency_failed_cohort_limit",
        "1",
        INT1,
        Delivery,
        "Failed cohorts before a destination counts as dead: the breaker opens after this × sluice_breaker_failure_threshold failures in a row.",
    ),
    // LMTP/SMTP client.
    p("smtp_connect_timeout", "30s", SECS, Client, "SMTP client: time limit to connect (0: system default)."),
    p("smtp_helo_timeout", "300s", SECS1, Client, "SMTP client: time limit for the greeting and EHLO reply."),
    p("smtp_mail_timeout", "300s", SECS1, Client, "SMTP client: time limit for the MAIL FROM reply."),
    p("smtp_rcpt_timeout", "300s", SECS1, Client, "SMTP client: time limit for a RCPT TO reply."),
    p("smtp_data_init_timeout", "120s", SECS1, Client, "SMTP client: time limit for the DATA reply."),
    p(
        "smtp_data_xfer_timeout",
        "180s",
        SECS1,
        Client,
        "SMTP client: time limit for sending one chunk of message content.",
    ),
    p(
        "smtp_data_done_timeout",
        "600s",
        SECS1,
        Client,
        "SMTP client: time limit for the reply to the final dot.",
    ),
    p("smtp_quit_timeout", "300s", SECS1, Client, "SMTP client: time limit for the QUIT reply."),
    p(
        "smtp_rset_timeout",
        "20s",
        SECS1,
        Client,
        "SMTP client: time limit for the RSET reply on a reused connection.",
    ),
    p("smtp_helo_name", "$myhostname", Str, Client, "SMTP client: the name sent in EHLO."),
    p(
        "smtp_connection_cache_time_limit",
        "2s",
        SECS,
        Client,
        "SMTP client: how long an idle connection is kept open for reuse.",
    ),
    p(
        "smtp_connection_reuse_time_limit",
        "300s",
        SECS,
        Client,
        "SMTP client: how long a connection may be reused before it is closed.",
    ),
    p(
        "smtp_mx_address_limit",
        "5",
        INT0,
        Client,
        "SMTP client: how many addresses of a next hop (its MX hosts' or its own) are tried per delivery; 0 means all.",
    ),
    p("lmtp_connect_timeout", "0s", SECS, Client, "LMTP client: time limit to connect (0: system default)."),
    p(
        "lmtp_mx_address_limit",
        "5",
        INT0,
        Client,
        "LMTP client: how many addresses of a next hop's host are tried per delivery; 0 means all.",
    ),
    p("lmtp_lhlo_timeout", "300s", SECS1, Client, "LMTP client: time limit for the greeting and LHLO reply."),
    p("lmtp_mail_timeout", "300s", SECS1, Client, "LMTP client: time limit for the MAIL FROM reply."),
    p("lmtp_rcpt_timeout", "300s", SECS1, Client, "LMTP client: time limit for a RCPT TO reply."),
    p("lmtp_data_init_timeout", "120s", SECS1, Client, "LMTP client: time limit for the DATA reply."),
    p(
        "lmtp_data_xfer_timeout",
        "180s",
        SECS1,
        Client,
        "LMTP client: time limit for sending one chunk of message content.",
    ),
    p(
        "lmtp_data_done_timeout",
        "600s",
        SECS1,
        Client,
        "LMTP client: time limit for each recipient's reply after the final dot.",
    ),
    p("lmtp_quit_timeout", "300s", SECS1, Client, "LMTP client: time limit for the QUIT reply."),
    p(
        "lmtp_rset_timeout",
        "20s",
        SECS1,
        Client,
        "LMTP client: time limit for the RSET reply on a reused connection.",
    ),
    p("lmtp_lhlo_name", "$myhostname", Str, Client, "LMTP client: the name sent in LHLO."),
    p(
        "lmtp_connection_cache_time_limit",
        "2s",
        SECS,
        Client,
        "LMTP client: how long an idle connection is kept open for reuse.",
    ),
    p(
        "lmtp_connection_reuse_time_limit",
        "300s",
        SECS,
        Client,
        "LMTP client: how long a connection may be reused before it is closed.",
    ),
    p(
        "smtp_tls_security_level",
        "may",
        Enum(&["", "none", "may", "encrypt", "verify", "secure"]),
        ClientTls,
        "SMTP client: none (or empty): no TLS; may: STARTTLS when offered, any certificate, else plaintext; encrypt: TLS required, any certificate; verify: TLS required, certificate from a trusted CA naming the host connected to; secure: as verify, naming the next-hop domain. Mail that cannot be sent at the level is deferred. sluice's default is may (Postfix's is empty): mail sent out by MX, bounces above all, uses opportunistic STARTTLS.",
    ),
    p(
        "smtp_tls_CAfile",
        "",
        Str,
        ClientTls,
        "SMTP client: PEM file of the CA certificates trusted at verify and secure (and to tell Trusted from Untrusted in logs); with neither this nor smtp_tls_CApath, the system bundle /etc/ssl/certs/ca-certificates.crt.",
    ),
    p(
        "smtp_tls_CApath",
        "",
        Str,
        ClientTls,
        "SMTP client: directory whose PEM files are trusted CA certificates, as smtp_tls_CAfile.",
    ),
    p(
        "smtp_tls_chain_files",
        "",
        List,
        ClientTls,
        "SMTP client: one PEM file holding the client private key and then its certificate chain, sent when the server asks; replaces smtp_tls_cert_file and smtp_tls_key_file.",
    ),
    p(
        "smtp_tls_cert_file",
        "",
        Str,
        ClientTls,
        "SMTP client: PEM file with the client certificate (and chain), sent when the server asks.",
    ),
    p(
        "smtp_tls_key_file",
        "$smtp_tls_cert_file",
        Str,
        ClientTls,
        "SMTP client: PEM file with the private key of smtp_tls_cert_file.",
    ),
    p(
        "smtp_tls_protocols",
        ">=TLSv1",
        TlsProtocols,
        ClientTls,
        "SMTP client: TLS protocols at level may, in Postfix's syntax; sluice speaks TLSv1.2 and TLSv1.3 only.",
    ),
    p(
        "smtp_tls_mandatory_protocols",
        ">=TLSv1",
        TlsProtocols,
        ClientTls,
        "SMTP client: TLS protocols at levels encrypt, verify and secure, as smtp_tls_protocols.",
    ),
    p(
        "smtp_tls_servername",
        "",
        Str,
        ClientTls,
        "SMTP client: the SNI name sent: empty for none, hostname (the host connected to), nexthop, or a name; at verify and secure the name checked is sent.",
    ),
    p(
        "lmtp_tls_security_level",
        "",
        Enum(&["", "none", "may", "encrypt", "verify", "secure"]),
        ClientTls,
        "LMTP client: none (or empty): no TLS; may: STARTTLS when offered, any certificate, else plaintext; encrypt: TLS required, any certificate; verify: TLS required, certificate from a trusted CA naming the host connected to; secure: as verify, naming the next-hop domain. Mail that cannot be sent at the level is deferred.",
    ),
    p(
        "lmtp_tls_CAfile",
        "",
        Str,
        ClientTls,
        "LMTP client: PEM file of the CA certificates trusted at verify and secure (and to tell Trusted from Untrusted in logs); with neither this nor lmtp_tls_CApath, the system bundle /etc/ssl/certs/ca-certificates.crt.",
    ),
    p(
        "lmtp_tls_CApath",
        "",
        Str,
        ClientTls,
        "LMTP client: directory whose PEM files are trusted CA certificates, as lmtp_tls_CAfile.",
    ),
    p(
        "lmtp_tls_chain_files",
        "",
        List,
        ClientTls,
        "LMTP client: one PEM file holding the client private key and then its certificate chain, sent when the server asks; replaces lmtp_tls_cert_file and lmtp_tls_key_file.",
    ),
    p(
        "lmtp_tls_cert_file",
        "",
        Str,
        ClientTls,
        "LMTP client: PEM file with the client certificate (and chain), sent when the server asks.",
    ),
    p(
        "lmtp_tls_key_file",
        "$lmtp_tls_cert_file",
        Str,
        ClientTls,
        "LMTP client: PEM file with the private key of lmtp_tls_cert_file.",
    ),
    p(
        "lmtp_tls_protocols",
        ">=TLSv1",
        TlsProtocols,
        ClientTls,
        "LMTP client: TLS protocols at level may, in Postfix's syntax; sluice speaks TLSv1.2 and TLSv1.3 only.",
    ),
    p(
        "lmtp_tls_mandatory_protocols",
        ">=TLSv1",
        TlsProtocols,
        ClientTls,
        "LMTP client: TLS protocols at levels encrypt, verify and secure, as lmtp_tls_protocols.",
    ),
    p(
        "lmtp_tls_servername",
        "",
        Str,
        ClientTls,
        "LMTP client: the SNI name sent: empty for none, hostname (the host connected to), nexthop, or a name; at verify and secure the name checked is sent.",
    ),
    // sluice additions.
    p(
        "sluice_mx_forbidden_networks",
        "127.0.0.0/8, [::1]/128, 0.0.0.0/8, [::]/128, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 169.254.0.0/16, [fe80::]/10, [fc00::]/7",
        HostList,
        Sluice,
        "Networks delivery never connects to when the next hop is the recipient's domain (no transport_maps entry, transport or relayhost names one: bounces, mail to the internet): its addresses there are ignored as if absent, and with none left the mail bounces (5.4.4). Loopback, this network, RFC 1918, shared (RFC 6598), link-local and unique-local addresses by default. Configured next hops are not checked.",
    ),
    p(
        "sluice_mx_forbidden_networks_exceptions",
        "",
        HostList,
        Sluice,
        "Networks of sluice_mx_forbidden_networks that domain-routed delivery may use after all (internal MX hosts of domains relayed by DNS).",
    ),
    p(
        "sluice_rate_limit",
        "0",
        Rate,
        Sluice,
        "Messages per second/minute/hour to one backend (0: no limit); per transport: <transport>_sluice_rate_limit.",
    ),
    p(
        "sluice_rate_burst",
        "0",
        INT0,
        Sluice,
        "Messages that may start at once within sluice_rate_limit (0: the rate's count).",
    ),
    p(
        "sluice_latency_target",
        "2s",
        SECS_MS,
        Sluice,
        "Delivery latency above which a backend's concurrency is lowered.",
    ),
    p(
        "sluice_adaptive_concurrency",
        "yes",
        Bool,
        Sluice,
        "Steer each backend's concurrency by the latency gradient (no: always the destination concurrency limit, a fixed reference).",
    ),
    p(
        "sluice_concurrency_probe_share",
        "5",
        Int { min: 1 },
        Sluice,
        "Percent of the time (at most 50) a backend's adaptive limit may spend trying one step up or down from the level it holds.",
    ),
    p(
        "sluice_breaker_failure_threshold",
        "5",
        INT1,
        Sluice,
        "Connection failures, timeouts or 421s in a row that open a backend's circuit breaker.",
    ),
    p(
        "sluice_breaker_cooldown",
        "10s",
        SECS_MS,
        Sluice,
        "After a trial delivery that was greeted and then failed: the wait before the next trial (an open breaker is watched by connect probes until then); doubles after each failed trial.",
    ),
    p(
        "sluice_breaker_max_cooldown",
        "30s",
        SECS_MS,
        Sluice,
        "Longest wait between trial deliveries of an open breaker, as sluice_breaker_cooldown doubles.",
    ),
    p(
        "sluice_breaker_probe_interval",
        "1s",
        SECS_MS,
        Sluice,
        "While a breaker is open: how often the backend is probed with a connection (greeting, LHLO/EHLO, QUIT, no message); the first answer lets one trial delivery through. At most one connection attempt per interval. After a trial that was greeted and then failed, trials follow sluice_breaker_cooldown instead.",
    ),
    p(
        "sluice_queue_high_water",
        "100000",
        INT0,
        Sluice,
        "Messages in the queue above which new mail gets 452 4.3.1 (0: no limit).",
    ),
    p(
        "sluice_queue_high_water_bytes",
        "0",
        Size,
        Sluice,
        "Queued bytes above which new mail gets 452 4.3.1 (0: no limit).",
    ),
    p(
        "sluice_admin_socket",
        "$queue_directory/admin.sock",
        Str,
        Sluice,
        "Unix socket of the admin API used by the sluice commands.",
    ),
    p(
        "sluice_metrics_listen",
        "",
        Listen,
        Sluice,
        "Address:port of the Prometheus /metrics and /health endpoint (empty: off).",
    ),
    p(
        "sluice_log_format",
        "text",
        Enum(&["text", "json"]),
        Sluice,
        "Log lines as Postfix-style text or as JSON objects.",
    ),
    p(
        "sluice_peername_lookup_timeout",
        "5s",
        SECS_MS,
        Sluice,
        "Longest time the DNS lookups of the SMTP server may take: the client's reverse and forward name before the greeting (past it the client is unknown), reject_rbl_client blocklists (past it: not listed) and reject_unknown_sender_domain at MAIL (past it: a 450 unless something else rejects).",
    ),
    // Sender authentication (src/auth/). Checks and the header are on by
    // default; enforcement only where the domain owner asked for it
    // (DMARC p=reject); see conf/README.md's section for the reasoning.
    p(
        "sluice_auth_checks",
        "spf, dkim, dmarc, arc",
        Words(&["spf", "dkim", "dmarc", "arc"]),
        Auth,
        "The sender authentication checks run on mail from clients outside sluice_auth_exempt_clients: spf (the HELO and MAIL FROM identities, RFC 7208, at MAIL FROM), dkim (every DKIM-Signature, up to 10, RFC 6376), arc (the ARC chain, RFC 8617) and dmarc (RFC 7489; it uses the SPF and DKIM results, so without them it can only fail), the last three at the end of the message. Empty: none (forged Authentication-Results headers are still removed).",
    ),
    p(
        "sluice_auth_header",
        "yes",
        Bool,
        Auth,
        "Add one Authentication-Results header (RFC 8601) with the checks' results at the top of each checked message.",
    ),
    p(
        "sluice_authserv_id",
        "$myhostname",
        Str,
        Auth,
        "The authserv-id of the Authentication-Results header sluice adds. Incoming Authentication-Results headers that claim it (case-insensitive) are removed from mail from clients outside sluice_auth_exempt_clients (RFC 8601 section 5), so only sluice's own result carries it; give every MX of a domain the same value so mailbox filters trust one name.",
    ),
    p(
        "sluice_auth_exempt_clients",
        "$mynetworks",
        HostList,
        Auth,
        "Clients whose mail is neither checked nor marked nor refused, and keeps its Authentication-Results headers: your own systems.",
    ),
    p(
        "sluice_auth_timeout",
        "$sluice_peername_lookup_timeout",
        SECS_MS,
        Auth,
        "Longest time the SPF check at MAIL FROM may take, and separately the DKIM, ARC and DMARC checks at the end of the message; a check still waiting for DNS then is a temperror.",
    ),
    p(
        "sluice_spf_fail_policy",
        "mark",
        Enum(&["mark", "reject"]),
        Auth,
        "What an SPF fail of the MAIL FROM identity (the domain's -all does not list the client) does: mark (accept; the header says spf=fail, and DMARC uses it) or reject (550 5.7.23 at RCPT TO). mark by default: mail forwarded by a third party fails SPF.",
    ),
    p(
        "sluice_dmarc_reject_policy",
        "reject",
        Enum(&["reject", "hold", "mark"]),
        Auth,
        "What a DMARC fail does when the sender's domain publishes p=reject: reject (550 5.7.1 at the end of the message, as the domain owner asks), hold (queued on hold until released with sluice queue release) or mark (delivered; the header says dmarc=fail).",
    ),
    p(
        "sluice_dmarc_quarantine_policy",
        "mark",
        Enum(&["reject", "hold", "mark"]),
        Auth,
        "What a DMARC fail does when the domain publishes p=quarantine: mark (delivered with dmarc=fail in the header, for the mailbox server's junk filing), hold or reject.",
    ),
    p(
        "sluice_auth_temperror_policy",
        "mark",
        Enum(&["mark", "defer"]),
        Auth,
        "When a check a decision depends on (DMARC; SPF when sluice_spf_fail_policy = reject) cannot finish for a DNS temporary error or sluice_auth_timeout: mark (accept; the header says temperror) or defer (451 4.7.1; the client tries again later).",
    ),
    p(
        "sluice_arc_trusted_sealers",
        "",
        List,
        Auth,
        "Domains whose ARC seal vouches for a message they forwarded (mailing lists, forwarding services): when the ARC chain passes and a seal is by one of them, a DMARC fail is only marked.",
    ),
    p(
        "sluice_table_timeout",
        "10s",
        SECS_MS1,
        Sluice,
        "Longest time one lookup in a directory table (pgsql:, mysql:, sqlite:, socketmap:) may take, every server tried and connecting included; ldap: tables use their own timeout (10 s by default). A lookup past it fails: 451 4.3.0 at RCPT, deferred mail in delivery.",
    ),
    p(
        "sluice_table_cache_positive_lifetime",
        "5m",
        SECS_MS,
        Sluice,
        "How long a directory table's answer that a key was found is reused without asking the server again (0: not kept).",
    ),
    p(
        "sluice_table_cache_negative_lifetime",
        "1m",
        SECS_MS,
        Sluice,
        "How long a directory table's answer that a key was not found is reused (0: not kept); a user added to the directory is accepted at the latest this long after. Failed lookups are never kept.",
    ),
    p(
        "sluice_table_cache_size",
        "50000",
        INT0,
        Sluice,
        "Most answers kept per directory table; the oldest make room (0: no cache).",
    ),
    p(
        "sluice_table_breaker_failure_threshold",
        "3",
        INT1,
        Sluice,
        "Failed lookups in a row after which a directory server (an LDAP, SQL or socketmap server of a table) is not asked for a while: lookups go to the table's next server, or fail at once when there is none, instead of each waiting out a timeout.",
    ),
    p(
        "sluice_table_breaker_cooldown",
        "5s",
        SECS_MS,
        Sluice,
        "How long a failing directory server is left alone before one lookup probes it; doubles after each failed probe.",
    ),
    p(
        "sluice_table_breaker_max_cooldown",
        "60s",
        SECS_MS,
        Sluice,
        "Cap on the doubling of sluice_table_breaker_cooldown.",
    ),
    p(
        "sluice_table_connection_limit",
        "8",
        INT1,
        Sluice,
        "Most connections per directory server (per table); a lookup waits, within its timeout, for a free one. Idle connections close after a minute (pgsql/mysql idle_interval; socketmap 10 s).",
    ),
    p(
        "sluice_table_reply_size_limit",
        "100000",
        Size,
        Sluice,
        "Largest result a directory table lookup may return, and largest message a directory server may send (PostgreSQL messages, MySQL packets, SQLite values, socketmap replies, the LDAP entries of one search); more fails the lookup.",
    ),
    p(
        "sluice_dns_servers",
        "",
        NameServers,
        Sluice,
        "DNS servers sluice asks (client names, blocklists, sender domains, sender authentication, bounces' MX): address, address:port or [ipv6]:port, port 53 by default; empty: the servers of /etc/resolv.conf. Read when the daemon starts.",
    ),
    p(
        "sluice_shutdown_grace",
        "30s",
        SECS_MS,
        Sluice,
        "On stop: how long SMTP sessions may go on before the rest are told 421 4.3.2 (new connections are refused at once); then how long deliveries in progress may finish before the rest are deferred.",
    ),
    p(
        "sluice_fleet_redis",
        "",
        RedisUrls,
        Sluice,
        "Fleet mode: redis:// or rediss:// URLs of the Redis (or Valkey) every MX host of the fleet shares; the first is used, the next after it stops answering (empty: fleet mode off, each host has its own gates). With sluice_fleet_sentinel_master set, these are the URLs of the Redis Sentinels (each with its port, usually 26379) and the fleet uses the master they name. Each backend's concurrency limit (and its adaptive limit), rate, breaker and pause are then the fleet's, kept in Redis. Each URL is checked at load: scheme, host, port 1-65535, database number. A rediss:// server's certificate is checked against the system's trusted roots (the SSL_CERT_FILE or SSL_CERT_DIR environment variable of the daemon names others, such as a private CA). The sluice_fleet_* parameters are read when the daemon starts; a reload warns when one changed.",
    ),
    p(
        "sluice_fleet_name",
        "sluice",
        Str,
        Sluice,
        "Name of the fleet: every Redis key starts with sluice:{NAME|, so several fleets can share one Redis without mixing their state.",
    ),
    p(
        "sluice_fleet_host",
        "$myhostname",
        Str,
        Sluice,
        "This host's name in the fleet (its leases and heartbeat; shown by sluice backend list). Must differ between the hosts of a fleet.",
    ),
    p("sluice_fleet_user", "", Str, Sluice, "Redis ACL user for fleet mode (empty: the default user)."),
    p(
        "sluice_fleet_password_file",
        "",
        Str,
        Sluice,
        "File holding the Redis password for fleet mode (first line; empty: no password). Kept out of main.cf so the configuration can be world-readable.",
    ),
    p(
        "sluice_fleet_sentinel_master",
        "",
        Str,
        Sluice,
        "Fleet mode through Redis Sentinel: the master's name in the sentinels' configuration (sentinel monitor NAME ...); sluice_fleet_redis then lists the sentinels (redis://host:26379, ...; rediss:// to speak TLS to them and to the master; a database number in the first URL is the master's). The fleet asks them where the master is at start, again whenever it stops answering (so it follows a failover within a heartbeat or two of the promotion, on its local share meanwhile), and every tenth heartbeat while it answers (so a master cut off from the sentinels but not from this host is left). A sentinel that knows no master of this name is a warning and the local share, not a refusal to start. The master is reached with sluice_fleet_user and sluice_fleet_password_file (set the same on every server: a replica becomes the master). Empty: sluice_fleet_redis names Redis servers.",
    ),
    p(
        "sluice_fleet_sentinel_user",
        "",
        Str,
        Sluice,
        "ACL user for the Redis Sentinels themselves (empty: the default user, or the one in the URL); the master's is sluice_fleet_user.",
    ),
    p(
        "sluice_fleet_sentinel_password_file",
        "",
        Str,
        Sluice,
        "File holding the Redis Sentinels' own password (sentinel requirepass; first line; empty: none, or the one in the URL); the master's is in sluice_fleet_password_file.",
    ),
    p(
        "sluice_fleet_lease_time",
        "10s",
        SECS_MS,
        Sluice,
        "How long a delivery's concurrency lease lives in Redis without renewal: the slots of a host that dies come back within this time. Renewed every third of it while the delivery runs.",
    ),
    p(
        "sluice_fleet_call_timeout",
        "200ms",
        SECS_MS,
        Sluice,
        "Deadline of every Redis call in fleet mode; a later answer counts as Redis unreachable, and the host falls back to its local share of each limit.",
    ),
    p(
        "sluice_fleet_heartbeat_interval",
        "1s",
        SECS_MS,
        Sluice,
        "How often a host tells Redis it is alive (hosts silent for three intervals are no longer counted) and, while Redis is unreachable, tries it again.",
    ),
];

/// Suffixes that may follow a transport name (`relay_destination_rate_delay`,
/// `mbx_sluice_rate_limit`): the per-transport parameters Postfix's queue
/// manager knows that sluice implements, and sluice's gate settings. The
/// base parameter (the default) is `default_<suffix>` when that exists,
/// else `<suffix>`.
pub static PER_TRANSPORT: &[&str] = &[
    "destination_concurrency_limit",
    "destination_concurrency_failed_cohort_limit",
    "destination_rate_delay",
    "destination_recipient_limit",
    "initial_destination_concurrency",
    "sluice_rate_limit",
    "sluice_rate_burst",
    "sluice_latency_target",
    "sluice_adaptive_concurrency",
    "sluice_concurrency_probe_share",
    "sluice_breaker_failure_threshold",
    "sluice_breaker_cooldown",
    "sluice_breaker_max_cooldown",
    "sluice_breaker_probe_interval",
];

/// Per-transport suffixes Postfix knows and sluice does not implement.
static POSTFIX_PER_TRANSPORT_UNSUPPORTED: &[&str] = &[
    "destination_concurrency_negative_feedback",
    "destination_concurrency_positive_feedback",
    "delivery_slot_cost",
    "delivery_slot_discount",
    "delivery_slot_loan",
    "extra_recipient_limit",
    "minimum_delivery_slots",
    "recipient_limit",
    "recipient_refill_delay",
    "recipient_refill_limit",
    "time_limit",
    "transport_rate_delay",
    "delivery_status_filter",
];

/// The row of a supported parameter.
pub fn find(name: &str) -> Option<&'static Param> {
    static INDEX: LazyLock<std::collections::HashMap<&'static str, &'static Param>> =
        LazyLock::new(|| PARAMS.iter().map(|p| (p.name, p)).collect());
    INDEX.get(name).copied()
}

/// The base parameter of a per-transport suffix.
pub fn per_transport_base(suffix: &str) -> Option<&'static Param> {
    if !PER_TRANSPORT.contains(&suffix) {
        return None;
    }
    find(&format!("default_{suffix}")).or_else(|| find(suffix))
}

/// Splits `<transport>_<suffix>` for one of `transports`, longest transport
/// name first (a transport may itself contain `_`).
pub fn split_per_transport<'a>(name: &'a str, transports: &[&str]) -> Option<(&'a str, &'a str)> {
    let mut best: Option<(&str, &str)> = None;
    for t in transports {
        if let Some(rest) = name.strip_prefix(t).and_then(|r| r.strip_prefix('_'))
            && best.is_none_or(|(bt, _)| t.len() > bt.len())
        {
            best = Some((&name[..t.len()], rest));
        }
    }
    best
}

/// True when `suffix` is a Postfix per-transport suffix sluice does not implement.
pub fn is_unsupported_per_transport(suffix: &str) -> bool {
    POSTFIX_PER_TRANSPORT_UNSUPPORTED.contains(&suffix)
}

static POSTFIX_NAMES: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("postfix_names.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
});

/// Why sluice does not implement Postfix parameter `name`, or None when it
/// is not a Postfix parameter (or is supported).
pub fn unsupported_reason(name: &str) -> Option<&'static str> {
    if find(name).is_some() || !POSTFIX_NAMES.contains(name) {
        return None;
    }
    Some(reason_for(name))
}

/// One-line reasons, most specific first: (prefix or exact name, reason).
/// A prefix ends in `_` or is matched exactly.
static REASONS: &[(&[&str], &str)] = &[
    (
        &["smtpd_delay_reject"],
        "sluice always evaluates restrictions at RCPT time (as smtpd_delay_reject = yes)",
    ),
    (
        &["smtpd_use_tls", "smtpd_enforce_tls", "smtpd_tls_wrappermode"],
        "obsolete or not implemented; use smtpd_tls_security_level",
    ),
    (
        &[
            "smtpd_sasl_",
            "smtp_sasl_",
            "lmtp_sasl_",
            "broken_sasl_auth_clients",
            "cyrus_sasl_config_path",
            "smtpd_client_auth_rate_limit",
        ],
        "SASL is not supported: sluice is an MX, not a submission server (permit_sasl_authenticated never matches)",
    ),
    (
        &["smtpd_tls_"],
        "only smtpd_tls_cert_file, smtpd_tls_key_file, smtpd_tls_eccert_file, smtpd_tls_eckey_file, smtpd_tls_chain_files, smtpd_tls_security_level, smtpd_tls_protocols and smtpd_tls_mandatory_protocols are supported; cipher choices are rustls' suites (their order: tls_preempt_cipherlist)",
    ),
    (
        &["smtp_use_tls", "smtp_enforce_tls", "lmtp_use_tls", "lmtp_enforce_tls"],
        "obsolete; use smtp_tls_security_level or lmtp_tls_security_level",
    ),
    (
        &["smtp_tls_", "lmtp_tls_"],
        "only the security level, CAfile, CApath, chain_files, cert_file, key_file, protocols, mandatory_protocols and servername are supported (DANE, fingerprints, policy maps and session caches are not); cipher choices are rustls defaults",
    ),
    (
        &["tls_", "tlsproxy_", "tlsmgr_"],
        "Postfix TLS library and tlsproxy settings do not apply (sluice uses rustls in process)",
    ),
    (
        &["postscreen_", "dnsblog_"],
        "sluice has no postscreen; the SMTP server applies its own per-client limits",
    ),
    (
        &["non_smtpd_milters"],
        "sluice takes mail over SMTP only (no sendmail command, no QMQP): smtpd_milters filters all of it",
    ),
    (
        &["smtpd_milter_maps"],
        "not implemented: give a listener its own milters with master.cf's -o smtpd_milters=",
    ),
    (
        &[
            "smtpd_policy_service_max_idle",
            "smtpd_policy_service_max_ttl",
            "smtpd_policy_service_request_limit",
            "smtpd_policy_service_retry_delay",
            "smtpd_policy_service_try_limit",
            "smtpd_policy_service_policy_context",
        ],
        "sluice asks a policy server over a new connection per request, once, within smtpd_policy_service_timeout",
    ),
    (
        &[
            "mime_header_checks",
            "nested_header_checks",
            "smtp_header_checks",
            "smtp_body_checks",
            "smtp_mime_header_checks",
            "smtp_nested_header_checks",
            "lmtp_header_checks",
            "lmtp_body_checks",
            "lmtp_mime_header_checks",
            "lmtp_nested_header_checks",
            "header_checks_",
            "content_filter",
            "smtpd_proxy_",
            "receive_override_options",
        ],
        "content inspection and filters are not supported: mail is relayed unchanged",
    ),
    (
        &[
            "mydestination",
            "local_",
            "alias_",
            "forward_",
            "mailbox_",
            "home_mailbox",
            "luser_relay",
            "mail_spool_directory",
            "allow_mail_to_",
            "command_execution_directory",
            "command_expansion_filter",
            "command_time_limit",
            "biff",
            "owner_request_special",
            "prepend_delivered_header",
            "expand_owner_alias",
            "require_home_directory",
            "strict_mailbox_ownership",
            "unknown_local_recipient_reject_code",
            "fallback_transport",
            "sun_mailtool_compatibility",
            "deliver_lock_",
            "stale_lock_time",
            "default_privs",
            "allow_min_user",
            "newaliases_path",
        ],
        "sluice has no local delivery: list the domains in relay_domains and route them with transport_maps",
    ),
    (
        &["virtual_", "unknown_virtual_"],
        "sluice has no virtual mailbox domains: use relay_domains, relay_recipient_maps and transport_maps (virtual_alias_maps and virtual_alias_domains are supported)",
    ),
    (
        &[
            "canonical_",
            "sender_canonical_",
            "recipient_canonical_",
            "masquerade_",
            "append_dot_mydomain",
            "append_at_myorigin",
            "swap_bangpath",
            "allow_percent_hack",
            "remote_header_rewrite_domain",
            "local_header_rewrite_clients",
            "resolve_",
            "enable_original_recipient",
            "empty_address_recipient",
            "relocated_maps",
            "show_user_unknown_table_name",
            "sender_bcc_maps",
            "recipient_bcc_maps",
            "always_bcc",
            "always_add_missing_headers",
            "undisclosed_recipients_header",
            "drop_headers",
        ],
        "sluice does not rewrite addresses or headers: mail is relayed unchanged",
    ),
    (&["syslog_", "maillog_", "postlog_"], "logging goes to stderr or the journal; see sluice_log_format"),
    (
        &[
            "daemon_directory",
            "data_directory",
            "command_directory",
            "html_directory",
            "manpage_directory",
            "readme_directory",
            "sample_directory",
            "shlib_directory",
            "meta_directory",
            "process_id_directory",
            "mail_owner",
            "setgid_group",
            "sendmail_path",
            "mailq_path",
            "import_environment",
            "export_environment",
            "multi_instance_",
            "postmulti_",
            "mail_release_date",
            "mail_version",
            "process_name",
            "process_id",
            "daemon_",
            "master_service_disable",
            "inet_interfaces_",
        ],
        "Postfix installation or process layout: not used by sluice",
    ),
    (
        &[
            "qmgr_",
            "default_delivery_slot_",
            "default_minimum_delivery_slots",
            "default_extra_recipient_limit",
            "default_recipient_limit",
            "default_recipient_refill_",
            "default_destination_concurrency_negative_feedback",
            "default_destination_concurrency_positive_feedback",
            "default_transport_rate_delay",
            "destination_concurrency_feedback_debug",
            "initial_destination_concurrency_",
        ],
        "Postfix queue-manager tuning: sluice's scheduler and per-backend gates use the sluice_* parameters",
    ),
    (&["unverified_sender_"], "reject_unverified_sender is not implemented (reject_unverified_recipient is)"),
    (
        &["address_verify_", "lmtp_address_verify_target", "smtp_address_verify_target"],
        "this address verification setting is not implemented: probes go to the recipient's own route (transport_maps, relay_transport), MAIL FROM, RCPT TO, RSET",
    ),
    (&["fast_flush_", "smtpd_etrn_"], "ETRN and fast flush are not supported"),
    (&["qmqpd_"], "QMQP is not supported"),
    (&["debug_peer_", "debugger_command"], "Postfix debugging hooks do not apply; use RUST_LOG"),
    (&["sender_dependent_", "transport_destination_"], "sender-dependent routing is not supported"),
    (&["smtp_", "lmtp_"], "this LMTP/SMTP client setting is not implemented"),
    (&["smtpd_"], "this SMTP server setting is not implemented"),
];

fn reason_for(name: &str) -> &'static str {
    for (patterns, reason) in REASONS {
        for pat in *patterns {
            let hit = if pat.ends_with('_') { name.starts_with(pat) } else { name == *pat };
            if hit {
                return reason;
            }
        }
    }
    "a Postfix feature sluice does not have"
}

/// True for a name Postfix knows (supported by sluice or not).
pub fn is_postfix_name(name: &str) -> bool {
    POSTFIX_NAMES.contains(name)
}

/// The reference of every supported parameter in Markdown: what
/// `conf/README.md` contains (a test keeps the file in step with this).
/// What sender authentication does and why its defaults are what they
/// are: the reference's text before the table of its parameters.
const AUTH_TEXT: &str = "\
sluice checks who sent the mail of every client outside `sluice_auth_exempt_clients` (by \
default `$mynetworks`, your own systems): SPF (RFC 7208) of the HELO name and of the MAIL FROM \
address as soon as MAIL FROM is accepted, then DKIM (RFC 6376), the ARC chain (RFC 8617) and \
DMARC (RFC 7489) once the message has arrived, before it is queued. The results go into one \
`Authentication-Results:` header (RFC 8601) with authserv-id `$sluice_authserv_id`, at the very \
top of the stored message, and into one log line:\n\n\
```\n\
Authentication-Results: mx.example.net;\n\
\tspf=pass (example.org designates the client) smtp.mailfrom=alice@example.org;\n\
\tspf=none (no SPF record for mail.example.org) smtp.helo=mail.example.org;\n\
\tdkim=pass header.d=example.org header.s=s1 header.b=\"AbCd+/12\";\n\
\tarc=none;\n\
\tdmarc=pass (p=reject dis=none) header.from=example.org\n\
\n\
sluice/smtpd[4711]: 4Xk2V1mbz3: auth: spf=pass smtp.mailfrom=alice@example.org, spf=none \
smtp.helo=mail.example.org, dkim=pass header.d=example.org, arc=none, dmarc=pass p=reject \
header.from=example.org\n\
```\n\n\
Incoming `Authentication-Results:` headers that claim that authserv-id are removed (RFC 8601 \
section 5): only sluice's own result may carry it, so a mailbox server's filter can trust it. \
Give every MX of one domain the same `sluice_authserv_id`.\n\n\
Lookups go through the daemon's resolver (`sluice_dns_servers`, else /etc/resolv.conf; a local \
caching resolver is as useful here as for any MX). The SPF check at MAIL FROM and the checks at the \
end of the message each have `sluice_auth_timeout`; a check still waiting for DNS then is a \
`temperror`. DKIM's body hashes are computed while the message streams in, so every message is \
verified whatever its size, with the memory of a small one. The header section is kept for the \
checks up to `header_size_limit` bytes of whole fields, plus every later From, DKIM-Signature and \
ARC field up to twice that: a signature over a field past the bound fails (its comment says \
`header section over header_size_limit`), and padding the header section cannot hide the From \
domain from DMARC. At most 10 DKIM signatures are verified per message.\n\n\
Defaults, and why. Everything is checked and recorded, and by default only one result refuses \
mail: a DMARC fail from a domain that publishes `p=reject` gets `550 5.7.1` at the end of the \
message. The domain owner asked for exactly that, the large mailbox providers do it, and it stops \
the plain forgery of a bank's or a government's From domain. Everything else is marked for the \
mailbox server's filters rather than refused or held: `p=quarantine` (filing into the junk folder \
is what the domain asks for, and a hold waits for an administrator a new MX may not have), an SPF \
fail (`-all`: mail forwarded by a third party fails SPF while its DKIM signature, and so DMARC, \
can still pass; `sluice_spf_fail_policy = reject` refuses it at RCPT TO with `550 5.7.23`, after \
the relay restrictions, as Postfix's policyd-spf in smtpd_recipient_restrictions does), and a DNS \
temporary error (deferring on every DNS hiccup delays good mail; `sluice_auth_temperror_policy = \
defer` answers `451 4.7.1` instead). Mailing lists that rewrite messages break DKIM and so DMARC; \
when such a list seals its mail with ARC, list it in `sluice_arc_trusted_sealers` and its mail \
is marked instead of refused.\n\n";

pub fn reference_markdown() -> String {
    use std::fmt::Write;
    let mut s = String::new();
    s.push_str("# sluice configuration reference\n\n");
    s.push_str(
        "<!-- Generated from src/config/params.rs by `SLUICE_WRITE_REFERENCE=1 cargo test --test config_reference`. Do not edit. -->\n\n",
    );
    s.push_str(
        "sluice reads Postfix's `main.cf` and `master.cf` syntax from its configuration directory \
(`/etc/sluice`, or `-c DIR`). A parameter means what it means in Postfix (postconf(5)) unless the \
description below says otherwise; every default is Postfix's, except where noted. `sluice config` \
prints the parameters set in main.cf (as `postconf -n`), `sluice config -d` the defaults, \
`sluice config NAME...` single values (`-x` expands `$name`, `-H` prints values only), and \
`sluice config check [--strict]` validates everything and exits non-zero on errors (with \
`--strict`, also on warnings).\n\n",
    );
    s.push_str("## Syntax\n\n");
    s.push_str(
        "- `main.cf`: `name = value`; lines starting with `#` are comments; a line that starts with \
white space continues the previous one; a later definition of the same name wins (with a warning). \
`$name`, `${name}`, `$(name)`, `${name?value}`, `${name:value}`, `${name?{value1}:{value2}}`, \
`${{text1} == {text2} ? {value1} : {value2}}` (and `!=`, `<`, `<=`, `>`, `>=`, `<level` ...) and `$$` \
expand as in Postfix. A reference loop is an error. Lists split on commas and/or white space; \
`{ ... }` groups text containing either.\n\
- `master.cf`: `service type private unpriv chroot wakeup maxproc command args`. `inet` services \
whose command is `smtpd` are the SMTP listeners (service `smtp`, `2525`, `127.0.0.1:2525`, \
`[::1]:2525`); services whose command is `lmtp` or `smtp` are delivery transports (their `maxproc` \
caps the transport's concurrency). `-o name=value` and `-o { name = value }` override main.cf for \
that service only. Other services are reported as not used by sluice. The transports `smtp`, \
`relay` (both SMTP) and `lmtp` exist even when master.cf does not define them; `error` and \
`discard` are built in.\n\
- Errors name the file, line and parameter; all are reported at once. An unknown parameter, or a \
Postfix parameter sluice does not implement, is a warning naming it with the reason (an error \
under `sluice config check --strict`). A configuration with errors is refused: at start sluice \
exits, and on `SIGHUP` (`sluice reload`) the running configuration stays in force.\n\n",
    );
    s.push_str("## Lookup tables\n\n");
    s.push_str(
        "- `texthash:/path` — `key value` lines, read at load.\n\
- `hash:/path`, `btree:/path`, `lmdb:/path`, `cdb:/path`, `dbm:/path`, `sdbm:/path` — sluice \
reads the **source text file** `/path` (what `postmap` indexes), not `/path.db`/`.lmdb`/`.cdb`; \
there is no need to run `postmap`, and a warning is given when the indexed file is older than the \
text. `proxy:type:/path` is read as `type:/path`.\n\
- `inline:{ key = value, { key = text with spaces } }` — keys and values in the parameter.\n\
- `static:value` (or `static:{ text with spaces }`) — the same result for every key.\n\
- `regexp:/path` (Rust `regex` syntax) and `pcre:/path` (`fancy-regex`: look-around and \
back-references) — `/pattern/flags result` lines, `!/pattern/ result`, `if /pattern/` ... `endif`, \
`$1`/`${1}` substitution; matching is case-insensitive unless the `i` flag toggles it; also \
inline as `regexp:{ {/re/ result}, ... }`.\n\
- `cidr:/path` — `network/prefix result` lines for IPv4 and IPv6, `if`/`endif`, `!` negation; \
also inline as `cidr:{ {net/prefix result}, ... }`.\n\n\
Keys of text tables and `inline:` are case-insensitive. Relative paths resolve against the \
configuration directory. Tables are read when the configuration loads; `sluice reload` re-reads \
them. Address lookups follow Postfix: `user+ext@domain`, `user@domain`, then `domain` (with \
parent domains when `parent_domain_matches_subdomains` lists the feature, else `.domain` keys), \
then `user+ext@`, `user@` for access tables; `*` last for transport_maps; `@domain` for \
relay_recipient_maps. Regular-expression and CIDR tables see only the full address.\n\n",
    );
    s.push_str("### Directory tables\n\n");
    s.push_str(
        "- `ldap:/path.cf`, `pgsql:/path.cf`, `mysql:/path.cf`, `sqlite:/path.cf` — the `.cf` file a \
Postfix server uses, unchanged: the parameters of ldap_table(5), pgsql_table(5), mysql_table(5) and \
sqlite_table(5) (`server_host`, `search_base`, `query_filter`, `result_attribute`, \
`special_result_attribute` with DN and URL recursion, `terminal_result_attribute`, \
`leaf_result_attribute`, `scope`, `bind`, `bind_dn`, `bind_pw`, `start_tls`, `tls_*`, `timeout`, \
`size_limit`, `recursion_limit`, `dereference`; `hosts`, `user`, `password`, `dbname`, `query` or \
the older `select_field`/`table`/`where_field`/`additional_conditions`, `require_result_set`; \
`dbpath`; and for all `result_format`, `expansion_limit`, `domain`), with the `%s %u %d %S %U %D \
%1-%9 %%` expansions and Postfix's quoting. A name the table type does not know is an error naming \
the file, line and parameter; so are bad values and templates. Loading reads and checks the files \
but connects to nothing: `sluice config check` and `sluice reload` work while a directory is down.\n\
- `socketmap:inet:host:port:name` and `socketmap:unix:/path:name` — Sendmail's netstring protocol \
(socketmap_table(5)); like regexp tables it sees only whole keys.\n\n\
Keys are folded to lower case (except for socketmap), as Postfix does. A key the `domain` list or \
the templates rule out is \"not found\" without a query. Answers are cached per table \
(`sluice_table_cache_positive_lifetime`, `sluice_table_cache_negative_lifetime`, \
`sluice_table_cache_size`); failures never are. Each server of a table has a breaker \
(`sluice_table_breaker_*`): once it fails repeatedly it is skipped (the next server is asked, or the \
lookup fails at once) until a probe succeeds. A lookup is bounded by `sluice_table_timeout` (LDAP: \
its `timeout`), connections are pooled (`sluice_table_connection_limit`), and results and server \
messages by `sluice_table_reply_size_limit`. A lookup that fails or times out is never \"not \
found\": it is logged (`warning: ldap:/etc/sluice/users.cf lookup error for \"user@example.org\"`) \
and the mail is refused with 451 4.3.0 or deferred. Not supported: `bind = sasl` (an error), \
`chase_referrals` (referrals are not followed), `option_file` (my.cnf is not read), \
`tls_cipher_suite`/`tls_ciphers` (rustls chooses); LDAP is spoken as version 3.\n\n\
Where they are used: `relay_domains`, `relay_recipient_maps` and the `check_*_access` tables are \
asked at RCPT, one key at a time as each restriction reaches it (a key the cache holds costs no \
round trip; a failure answers `451 4.3.0 <address>: Temporary lookup failure`); `transport_maps` \
(and `relay_domains`) are asked when delivery routes a recipient, for a claimed batch at once \
(a failure defers the recipient with `transport map lookup failure`). They cannot be used in \
network lists (`mynetworks`, ...), `header_checks`/`body_checks`, or another table's `domain` \
list. `sluice config query TYPE:NAME KEY` (or `-` for keys on stdin) looks a key up as \
`postmap -q` does, with this configuration's settings.\n\n",
    );
    s.push_str("## Restrictions\n\n");
    let _ = writeln!(
        s,
        "Restriction lists take these Postfix restrictions: {}. Others Postfix has are warned about \
and left out of the list; a misspelt name is an error. `reject_rbl_client domain[=d.d.d.d]` \
asks the blocklist when the client connects (within `sluice_peername_lookup_timeout`, at the same \
time as the client's name); without a filter only answers in 127.0.0.0/8 count, and never \
127.255.255.x, which blocklists use to refuse a query. A listing's TXT record (asked by the same \
deadline) ends the reply as its reason, as in Postfix's default_rbl_reply, with anything but \
printable ASCII replaced by `_`. \
`permit_dnswl_client domain[=d.d.d.d]` is asked at the same time; without a filter it also \
ignores 127.0.0.255 (an allowlist refusing the query), and in the relay and recipient lists it \
permits only mail for a destination sluice relays to, so it never makes an open relay. \
`reject_rhsbl_client` (the confirmed client name), `reject_rhsbl_reverse_client` (the reverse \
name, confirmed or not), `reject_rhsbl_helo`, `reject_rhsbl_sender` and \
`reject_rhsbl_recipient` (the address's domain) ask `<name>.<domain>` when the restriction is \
reached, with the same answer rules. \
`reject_unknown_sender_domain` asks DNS at MAIL FROM (MX, else A/AAAA; a lone null MX is RFC \
7505's \"takes no mail\"), and `reject_unknown_helo_hostname` (MX or A/AAAA of the HELO name; \
address literals pass) when it is reached, within the same bound. `check_policy_service inet:host:port` or \
`unix:path` (relative to queue_directory) speaks Postfix's policy delegation protocol, one \
connection per request; its answer is an access(5) result, and `PREPEND` headers (from a policy \
server or an access table) are written before sluice's `Received:`. Besides those, sluice \
changes a message only to add its `Authentication-Results:` header and remove forged ones (see \
Sender authentication).\n",
        super::restrictions::NAMES.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
    );
    s.push_str("## Routing\n\n");
    s.push_str(
        "`transport_maps` results are `transport:nexthop` as in transport(5): an empty transport or \
next hop keeps what would have been used without the entry; a transport with an empty next hop \
delivers to the recipient domain. Next hops: `[host]:port` and `inet:host:port` (no MX lookup), \
`host` or `host:port` (MX lookup for SMTP; LMTP never looks up MX), `unix:/path` (relative paths \
are under queue_directory). `error:text` bounces, `discard:` drops; named master.cf transports take \
their protocol from their command. Without a transport_maps entry, `relay_domains` use \
`relay_transport` and other domains `default_transport`, with `relayhost` as the next hop when the \
transport names none, else the recipient domain. Every fixed result in transport_maps is checked \
when the configuration loads: a transport master.cf does not define (e.g. `local`) or a next hop \
that does not parse is an error naming the table's file and line, so `sluice config check` and \
`sluice reload` refuse it. Results built from a regexp's `$n` are checked when used; a bad one \
defers that mail and logs why.\n\n",
    );
    for group in Group::ALL {
        let _ = writeln!(s, "## {}\n", group.title());
        if group == Group::Auth {
            s.push_str(AUTH_TEXT);
        }
        s.push_str("| parameter | default | type | meaning |\n|---|---|---|---|\n");
        for prm in PARAMS.iter().filter(|prm| prm.group == group) {
            let default = match prm.default {
                Default::Text("") => "(empty)".to_owned(),
                Default::Text(t) => format!("`{}`", t.replace('|', "\\|")),
                Default::Computed(how) => format!("({how})"),
            };
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} |",
                prm.name,
                default,
                prm.kind.describe().replace('|', "\\|"),
                prm.description.replace('|', "\\|")
            );
        }
        s.push('\n');
        if group == Group::Delivery {
            s.push_str(
                "Per transport, `<transport>_<suffix>` overrides the default for a transport defined in \
master.cf (or the built-in `smtp`, `relay`, `lmtp`), for these suffixes:\n\n",
            );
            for suffix in PER_TRANSPORT {
                let base = per_transport_base(suffix).map(|b| b.name).unwrap_or("?");
                let _ = writeln!(s, "- `<transport>_{suffix}` (default `${base}`)");
            }
            s.push('\n');
        }
    }
    s.push_str("## Postfix parameters sluice does not implement\n\n");
    s.push_str("Setting one is a warning with one of these reasons (an error under `check --strict`):\n\n");
    let mut seen = Vec::new();
    for (patterns, reason) in REASONS {
        if seen.contains(reason) {
            continue;
        }
        seen.push(*reason);
        let names: Vec<String> = patterns
            .iter()
            .map(|p| if p.ends_with('_') { format!("`{p}*`") } else { format!("`{p}`") })
            .collect();
        let _ = writeln!(s, "- {}: {}", names.join(", "), reason);
    }
    s.push_str("- any other Postfix parameter: not implemented by sluice\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_not_in_the_unsupported_list() {
        let mut seen = HashSet::new();
        for prm in PARAMS {
            assert!(seen.insert(prm.name), "duplicate {}", prm.name);
            assert!(unsupported_reason(prm.name).is_none());
        }
    }

    #[test]
    fn every_per_transport_suffix_has_a_base() {
        for s in PER_TRANSPORT {
            assert!(per_transport_base(s).is_some(), "{s}");
        }
        assert_eq!(
            per_transport_base("destination_concurrency_limit").unwrap().name,
            "default_destination_concurrency_limit"
        );
        assert_eq!(
            per_transport_base("initial_destination_concurrency").unwrap().name,
            "initial_destination_concurrency"
        );
        assert_eq!(per_transport_base("sluice_rate_limit").unwrap().name, "sluice_rate_limit");
    }

    #[test]
    fn postfix_defaults_where_the_brief_names_them() {
        let d = |n: &str| match find(n).unwrap().default {
            Default::Text(t) => t,
            Default::Computed(_) => "computed",
        };
        assert_eq!(d("message_size_limit"), "10240000");
        assert_eq!(d("smtpd_recipient_limit"), "1000");
        assert_eq!(d("maximal_queue_lifetime"), "5d");
        assert_eq!(d("minimal_backoff_time"), "300s");
        assert_eq!(d("maximal_backoff_time"), "4000s");
        assert_eq!(d("default_destination_recipient_limit"), "50");
        assert_eq!(d("smtpd_forbid_bare_newline"), "normalize");
        assert_eq!(d("relay_domains"), "");
        assert_eq!(d("mynetworks_style"), "host");
    }

    #[test]
    fn unsupported_names_get_specific_reasons() {
        assert!(unsupported_reason("mydestination").unwrap().contains("no local delivery"));
        assert!(unsupported_reason("smtpd_sasl_auth_enable").unwrap().contains("SASL"));
        assert!(unsupported_reason("postscreen_dnsbl_sites").unwrap().contains("postscreen"));
        assert!(unsupported_reason("smtp_tls_policy_maps").unwrap().contains("security level"));
        assert!(unsupported_reason("biff").is_some());
        assert!(unsupported_reason("message_size_limit").is_none());
        assert!(unsupported_reason("messgae_size_limit").is_none());
    }

    #[test]
    fn per_transport_names_split_on_the_longest_transport() {
        let t = ["relay", "relay_x", "mbx"];
        assert_eq!(
            split_per_transport("relay_x_destination_rate_delay", &t),
            Some(("relay_x", "destination_rate_delay"))
        );
        assert_eq!(split_per_transport("mbx_sluice_rate_limit", &t), Some(("mbx", "sluice_rate_limit")));
        assert_eq!(split_per_transport("other_sluice_rate_limit", &t), None);
    }
}
