//! Native sender authentication at the MX: SPF (RFC 7208) of the HELO
//! and MAIL FROM identities at MAIL FROM; DKIM (RFC 6376), ARC (RFC 8617)
//! and DMARC (RFC 7489) at the end of the message; one
//! `Authentication-Results:` header (RFC 8601) recording them; removal of
//! incoming `Authentication-Results:` fields that claim sluice's
//! authserv-id; and the policy that turns results into a reply, a hold or
//! nothing. The cryptography and record parsing are `mail-auth`'s.
//!
//! The session calls, in order: [`Authenticator::spf`] once MAIL FROM is
//! accepted; [`policy::at_rcpt`] with each recipient; a [`MessageCheck`]
//! and a [`Strip`] fed every message byte as it arrives (the first sees
//! the message as received, the second filters what is stored);
//! [`Authenticator::end_of_data`] before the queue commit, whose
//! [`Decision`] says whether to refuse, hold or accept and which header to
//! put at the top of the stored message. Clients in
//! `sluice_auth_exempt_clients` ([`Settings::applies_to`]) skip all of it.
//!
//! **DNS.** Every lookup goes through the daemon's resolver, with its
//! name servers (`sluice_dns_servers` or /etc/resolv.conf), options and
//! cache. `mail-auth` can only ask a hickory resolver of its own type, and
//! its cache hooks cannot express every answer (an SPF `exists:` whose
//! name has no address is not representable), so it is given the very
//! hickory resolver the daemon's [`crate::resolver::SystemResolver`] wraps
//! rather than answers fed through a cache. Tests point that resolver at
//! their loopback DNS server. Each stage (SPF; the end-of-data checks
//! together) is bounded by `sluice_auth_timeout`; a check that has not
//! finished then is a `temperror`.
//!
//! **Large messages.** DKIM's body hashes are computed while the body
//! streams (`verify.rs`), so a message is never held whole for DKIM and
//! nothing is skipped for size: a 50 MB message is verified like a small
//! one. The header section kept is bounded (`header_size_limit`).
//!
//! **Time.** `mail-auth` reads the system clock itself to compare DKIM
//! and ARC `x=` expiry times; nothing else here reads a clock but the
//! stage deadlines (`crate::clock`).
//!
//! Owns the checks, the header and the policy. Never touches the queue,
//! the session's state or the network beyond DNS; replies are built here
//! and sent by the session.

pub mod fields;
pub mod policy;
pub mod report;
pub mod settings;
pub mod spf;
pub mod strip;
pub mod verify;

pub use policy::Disposition;
pub use report::{AuthResult, Report, SpfReport};
pub use settings::{Action, Checks, Exempt, Settings, TempAction};
pub use spf::Envelope;
pub use strip::Strip;
pub use verify::MessageCheck;

use mail_auth::MessageAuthenticator;

/// The checks' access to DNS: `mail-auth` over the daemon's resolver.
/// Cheap to clone (clones share the resolver and its cache).
#[derive(Clone)]
pub struct Authenticator {
    inner: MessageAuthenticator,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator")
    }
}

/// What the end-of-data checks decided for one message.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Every result, for the log line ([`Report::summary`]).
    pub report: Report,
    /// Refuse, hold or accept.
    pub disposition: Disposition,
    /// The `Authentication-Results:` header to put at the top of the
    /// stored message (CRLF-terminated), unless `sluice_auth_header = no`.
    pub header: Option<String>,
}

impl Authenticator {
    /// Shares `resolver`'s hickory resolver.
    pub fn new(resolver: &crate::resolver::SystemResolver) -> Authenticator {
        Authenticator { inner: MessageAuthenticator(resolver.hickory().clone()) }
    }

    /// SPF of the transaction's identities, if `settings` check SPF.
    pub async fn spf(&self, settings: &Settings, env: &Envelope<'_>) -> Option<SpfReport> {
        if !settings.checks.spf {
            return None;
        }
        Some(spf::check(&self.inner, env, settings.timeout).await)
    }

    /// Starts the end-of-data checks of one message (whatever `settings`
    /// ask, the stripping of forged headers is separate: [`Strip`]).
    pub fn begin(&self, settings: &Settings) -> MessageCheck {
        MessageCheck::new(settings.header_limit)
    }

    /// Runs the end-of-data checks, decides, and renders the header. `spf`
    /// is what [`Authenticator::spf`] found for this transaction.
    pub async fn end_of_data(
        &self,
        settings: &Settings,
        check: MessageCheck,
        spf: Option<&SpfReport>,
        env: &Envelope<'_>,
    ) -> Decision {
        // DMARC's RFC5321.MailFrom domain: the HELO name for a null
        // reverse path (RFC 7489 3.1.2 via RFC 7208 2.4).
        let domain = match env.sender.rsplit_once('@') {
            Some((_, d)) => d,
            None => env.helo,
        };
        let mut report = if settings.checks.at_end_of_data() {
            check.finish(&self.inner, settings.checks, spf, domain, settings.timeout).await
        } else {
            Report::default()
        };
        report.spf = spf.cloned();
        let disposition = policy::at_end(settings, &report);
        let header = settings.header.then(|| report.header(&settings.authserv_id, disposition.word()));
        Decision { report, disposition, header }
    }
}
