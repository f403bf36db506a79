//! Opening a connection to a backend: connecting to the first target that
//! answers, the greeting, `LHLO`/`EHLO` (with the `HELO` fallback), the
//! check that the server is not this host (Postfix's "replied to
//! HELO/EHLO with my own hostname"), and STARTTLS at the transport's
//! level (`tls.rs`), with `LHLO`/`EHLO` again over TLS. What it gives is a
//! [`Connection`] ready for transactions (`connection.rs`).

use std::time::Duration;

use super::connection::Connection;
use super::wire::Caps;
use super::*;
use crate::clock;
use crate::config::Protocol;
use crate::delivery::nexthop::Target;
use crate::reply::{Class, Reply, Status};

/// Connects to the first target that answers and completes the greeting,
/// without TLS or the loop check; the error is the last target's.
pub async fn open(
    targets: &[Target],
    protocol: Protocol,
    helo_name: &str,
    timeouts: &Timeouts,
) -> Result<Connection, OpenError> {
    let none = tls::Policy::none();
    open_with(targets, &Setup { protocol, helo_name, timeouts, tls: &none, loop_name: None, nexthop: "" })
        .await
}

/// Connects to the first target that answers and completes the greeting,
/// STARTTLS as `setup.tls` says, and the loop check; the error is the last
/// target's. A target that is this host ends the search (no backup host
/// is tried: that would only make the loop worse). At level `may`, a
/// target whose TLS handshake fails is connected to again without TLS.
pub async fn open_with(targets: &[Target], setup: &Setup<'_>) -> Result<Connection, OpenError> {
    if setup.tls.level.required()
        && let Some(why) = setup.tls.unusable()
    {
        return Err(OpenError {
            text: format!("TLS is required, but cannot be used: {why}"),
            dsn: Status(4, 7, 5),
            ours: true,
        });
    }
    let mut last = OpenError { text: "no address to connect to".into(), dsn: Status(4, 4, 1), ours: false };
    for (k, target) in targets.iter().enumerate() {
        let mut tls = setup.tls.level != tls::Level::None;
        loop {
            let io: Box<dyn Io> = match connect(target, setup.timeouts.connect).await {
                Ok(io) => io,
                Err(e) => {
                    last = e;
                    break;
                }
            };
            match Connection::handshake(io, target.clone(), setup, tls, k == 0).await {
                Ok(s) => return Ok(s),
                Err(Handshake::TryPlaintext(why)) => {
                    note(
                        setup.protocol,
                        false,
                        &format!("{why}; trying {target} again without TLS (level may)"),
                    );
                    tls = false;
                }
                Err(Handshake::Failed(e)) if e.ours => return Err(e),
                Err(Handshake::Failed(e)) => {
                    last = e;
                    break;
                }
            }
        }
    }
    Err(last)
}

/// A line of the client's own log (`sluice/lmtp`, `sluice/smtp`), as
/// Postfix's client writes it; `warn` for a `warning:`.
fn note(protocol: Protocol, warn: bool, line: &str) {
    match (protocol, warn) {
        (Protocol::Lmtp, false) => tracing::info!(target: "lmtp", "{line}"),
        (Protocol::Smtp, false) => tracing::info!(target: "smtp", "{line}"),
        (Protocol::Lmtp, true) => tracing::warn!(target: "lmtp", "{line}"),
        (Protocol::Smtp, true) => tracing::warn!(target: "smtp", "{line}"),
    }
}

/// Why a handshake did not give a connection.
enum Handshake {
    Failed(OpenError),
    /// The TLS handshake failed at level `may`: connect again in plaintext.
    TryPlaintext(String),
}

impl From<OpenError> for Handshake {
    fn from(e: OpenError) -> Handshake {
        Handshake::Failed(e)
    }
}

async fn connect(target: &Target, timeout: Duration) -> Result<Box<dyn Io>, OpenError> {
    let fail =
        |what: String, dsn| OpenError { text: format!("connect to {target}: {what}"), dsn, ours: false };
    let attempt = async {
        match target {
            Target::Inet { addr, .. } => {
                let s = tokio::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok::<Box<dyn Io>, std::io::Error>(Box::new(s))
            }
            Target::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok(Box::new(s) as Box<dyn Io>)
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(io)) => Ok(io),
        Ok(Err(e)) => Err(fail(io_text(&e), Status(4, 4, 1))),
        Err(_) => Err(fail("Connection timed out".into(), Status(4, 4, 1))),
    }
}

/// An I/O error as Postfix words it (`Connection refused`), without Rust's
/// `(os error 111)` suffix.
fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

impl Connection {
    /// Reads the greeting and says `LHLO`/`EHLO` (falling back to `HELO` when
    /// an SMTP server rejects `EHLO`) over an already connected stream,
    /// checks that the server is not this host, and starts TLS when `tls`
    /// and the level ask for it. `best`: this is the first target (a loop
    /// found there bounces; further down the list it defers).
    async fn handshake(
        io: Box<dyn Io>,
        target: Target,
        setup: &Setup<'_>,
        tls: bool,
        best: bool,
    ) -> Result<Connection, Handshake> {
        let now = clock::instant();
        let mut s = Connection {
            io,
            rbuf: Vec::with_capacity(4096),
            rpos: 0,
            caps: Caps::default(),
            target,
            protocol: setup.protocol,
            timeouts: *setup.timeouts,
            opened: now,
            idle_since: now,
            transactions: 0,
            clean: true,
            tls: None,
        };
        let greeting = s.reply(Phase::Greeting).await.map_err(|b| s.open_error(&b))?;
        if greeting.code() != 220 {
            return Err(s.refused(&greeting).into());
        }
        let name = s.hello(setup.helo_name).await?;
        if let Some(me) = setup.loop_name
            && name.eq_ignore_ascii_case(me)
        {
            // Postfix's check: a server that calls itself by our name is
            // us (reached through a NAT, a proxy or a wrong MX).
            note(
                setup.protocol,
                true,
                &format!("host {} replied to HELO/EHLO with my own hostname {me}", s.target),
            );
            return Err(Handshake::Failed(OpenError {
                text: format!("mail for {} loops back to myself", setup.nexthop),
                dsn: if best { Status(5, 4, 6) } else { Status(4, 4, 6) },
                ours: true,
            }));
        }
        if tls {
            s.start_tls(setup).await?;
        } else if setup.tls.level.required() {
            // Not reached: a required level never retries in plaintext.
            return Err(Handshake::Failed(
                s.tls_failure("TLS is required, but was not used", Status(4, 7, 5)),
            ));
        }
        Ok(s)
    }

    /// `LHLO`/`EHLO` (with `HELO` after an SMTP server's `5xx`); reads the
    /// capabilities. Returns the name the server gave.
    async fn hello(&mut self, helo_name: &str) -> Result<String, OpenError> {
        let verb = match self.protocol {
            Protocol::Lmtp => "LHLO",
            Protocol::Smtp => "EHLO",
        };
        self.send(format!("{verb} {helo_name}\r\n").as_bytes(), Phase::Hello)
            .await
            .map_err(|b| self.open_error(&b))?;
        let reply = self.reply(Phase::Hello).await.map_err(|b| self.open_error(&b))?;
        let first_word =
            |r: &Reply| r.lines().first().and_then(|l| l.split_whitespace().next()).unwrap_or("").to_owned();
        if reply.code() == 250 {
            self.caps = Caps::from_ehlo(&reply);
            return Ok(first_word(&reply));
        }
        if self.protocol == Protocol::Smtp && reply.class() == Class::Permanent && reply.code() != 421 {
            self.send(format!("HELO {helo_name}\r\n").as_bytes(), Phase::Hello)
                .await
                .map_err(|b| self.open_error(&b))?;
            let reply = self.reply(Phase::Hello).await.map_err(|b| self.open_error(&b))?;
            if reply.code() == 250 {
                self.caps = Caps::default();
                return Ok(first_word(&reply));
            }
            return Err(self.refused(&reply));
        }
        Err(self.refused(&reply))
    }

    /// STARTTLS at the level `setup.tls` says: when the server offers it
    /// (required: when it does not, or refuses, or the handshake fails, the
    /// mail waits), then `LHLO`/`EHLO` again over TLS.
    async fn start_tls(&mut self, setup: &Setup<'_>) -> Result<(), Handshake> {
        let level = setup.tls.level;
        let host = self.target.host();
        if !self.caps.starttls {
            if level.required() {
                let text = format!("TLS is required, but was not offered by host {host}");
                return Err(Handshake::Failed(self.tls_failure(&text, Status(4, 7, 4))));
            }
            return Ok(());
        }
        self.send(b"STARTTLS\r\n", Phase::Hello).await.map_err(|b| self.open_error(&b))?;
        let reply = self.reply(Phase::Hello).await.map_err(|b| self.open_error(&b))?;
        if reply.code() != 220 {
            if level.required() {
                let text =
                    format!("TLS is required, but host {host} refused to start TLS: {}", reply.to_one_line());
                return Err(Handshake::Failed(self.tls_failure(&text, Status(4, 7, 5))));
            }
            // `may`: the server is where it was before the command.
            return Ok(());
        }
        // Whatever the server sent after its 220 came before the handshake:
        // it must never be read as if it came over TLS (the STARTTLS
        // injection attack).
        self.rbuf.clear();
        self.rpos = 0;
        let plain =
            std::mem::replace(&mut self.io, Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink())));
        let names = tls::Names { host: self.target.name(), nexthop: setup.nexthop };
        let done = tokio::time::timeout(self.timeouts.helo, setup.tls.handshake(plain, names)).await;
        let (io, session) = match done {
            Ok(Ok(x)) => x,
            failed => {
                let why = match failed {
                    Ok(Err(why)) => why,
                    _ => "TLS handshake timed out".into(),
                };
                let text = format!("Cannot start TLS with host {host}: {why}");
                if level.required() {
                    return Err(Handshake::Failed(self.tls_failure(&text, Status(4, 7, 5))));
                }
                return Err(Handshake::TryPlaintext(text));
            }
        };
        self.io = io;
        note(setup.protocol, false, &session.log_line(&self.target.to_string()));
        self.tls = Some(session);
        self.hello(setup.helo_name).await?;
        Ok(())
    }

    fn tls_failure(&self, text: &str, dsn: Status) -> OpenError {
        OpenError { text: text.to_owned(), dsn, ours: false }
    }
}
