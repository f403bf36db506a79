//! `pgsql:/etc/sluice/file.cf` (pgsql_table(5)): `hosts`, `user`,
//! `password`, `dbname`, `query` (or the older `select_function`,
//! `select_field`/`table`/`where_field`/`additional_conditions`),
//! `result_format`, `expansion_limit`, `domain`, and the undocumented
//! `encoding` and `idle_interval`.
//!
//! Owns the PostgreSQL side: hosts as Postfix reads them (`inet:host:port`,
//! `host:port`, `unix:/socket/directory`, or a `postgresql://` URI with
//! its own user, password, dbname and `sslmode`/`sslrootcert`), tried in
//! random order; queries sent as simple (text) queries as Postfix's
//! `PQexec`, with keys escaped as `PQescapeStringConn` does for the
//! connection (`'` doubled, and `\` too when the server's
//! `standard_conforming_strings` is off); every column of every row read
//! as text. TLS (`sslmode` from a URI; plain hosts `prefer` as libpq) is
//! negotiated here, and the stream tokio-postgres reads is [`Bounded`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::{NoTls, SimpleQueryMessage};

use super::bounded::Bounded;
use super::cf::CfFile;
use super::pool::Pool;
use super::tls::{self, TlsFiles, Verify};
use super::{Collect, Failure, Kind, Open, Source, SqlQuery, percent_decode};

/// libpq's `sslmode`s that change what sluice does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Tcp {
        host: String,
        port: u16,
    },
    /// A socket directory (`/var/run/postgresql`) and port.
    Unix {
        dir: PathBuf,
        port: u16,
    },
}

#[derive(Debug, Clone)]
struct Host {
    target: Target,
    user: String,
    password: Option<String>,
    dbname: String,
    ssl: SslMode,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// One pooled connection and how keys are escaped on it.
struct PgConn {
    client: tokio_postgres::Client,
    /// `standard_conforming_strings` is on: backslashes are literal.
    conforming: bool,
    /// Why the connection ended, once it has (the client itself only sees
    /// that it is closed).
    ended: Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn").field("conforming", &self.conforming).finish()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

#[derive(Debug)]
pub(crate) struct PgsqlSource {
    hosts: Vec<Host>,
    servers: Vec<String>,
    query: Arc<SqlQuery>,
    pools: Vec<Pool<PgConn>>,
}

/// The name the process runs as: libpq's default user (and database).
fn os_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "postgres".into())
}

impl PgsqlSource {
    pub fn from_cf(cf: &CfFile, o: &mut Open<'_, '_>) -> Option<PgsqlSource> {
        let query = SqlQuery::from_cf(cf, Kind::Pgsql, o);
        let encoding = cf.str("encoding", "UTF8");
        if !matches!(encoding.to_ascii_uppercase().replace('-', "").as_str(), "UTF8" | "UNICODE") {
            o.warnings.push(cf.diag(
                "encoding",
                format!("sluice always asks the server for UTF8 (the server converts from {encoding})"),
            ));
        }
        if cf.has("retry_interval") {
            o.warnings.push(cf.diag(
                "retry_interval",
                "not used: sluice_table_breaker_cooldown decides when a failing host is asked again",
            ));
        }
        let idle = Duration::from_secs(cf.int("idle_interval", 60, 1, o.errors) as u64);
        let user = cf.get("user").filter(|u| !u.is_empty()).map(str::to_owned).unwrap_or_else(os_user);
        let password = cf.get("password").filter(|p| !p.is_empty()).map(str::to_owned);
        let dbname =
            cf.get("dbname").filter(|d| !d.is_empty()).map(str::to_owned).unwrap_or_else(|| user.clone());
        let words: Vec<&str> =
            cf.str("hosts", "").split([',', ' ', '\t']).filter(|w| !w.is_empty()).collect();
        let words = if words.is_empty() { vec!["localhost"] } else { words };
        let mut hosts = Vec::new();
        for w in words {
            let parsed = if w.contains("://") {
                parse_uri(w, o.dir)
            } else {
                parse_plain(w).map(|target| {
                    let ssl = if matches!(target, Target::Unix { .. }) {
                        SslMode::Disable
                    } else {
                        SslMode::Prefer
                    };
                    (target, None, None, None, ssl, TlsFiles::default())
                })
            };
            match parsed {
                Ok((target, u, p, d, ssl, files)) => {
                    let verify = match ssl {
                        SslMode::Disable => None,
                        SslMode::Prefer | SslMode::Require => Some(Verify::None),
                        SslMode::VerifyCa => Some(Verify::Chain),
                        SslMode::VerifyFull => Some(Verify::Full),
                    };
                    let tls = match verify.map(|v| tls::client_config(v, &files)) {
                        Some(Ok(c)) => Some(c),
                        Some(Err(e)) => {
                            o.errors.push(cf.diag("hosts", format!("{w}: {e}")));
                            None
                        }
                        None => None,
                    };
                    hosts.push(Host {
                        target,
                        user: u.clone().unwrap_or_else(|| user.clone()),
                        password: p.or_else(|| password.clone()),
                        dbname: d.or(u).unwrap_or_else(|| dbname.clone()),
                        ssl,
                        tls,
                    });
                }
                Err(e) => o.errors.push(cf.diag("hosts", format!("\"{w}\": {e}"))),
            }
        }
        let servers = hosts
            .iter()
            .map(|h| match &h.target {
                Target::Tcp { host, port } if host.contains(':') => format!("pgsql:[{host}]:{port}"),
                Target::Tcp { host, port } => format!("pgsql:{host}:{port}"),
                Target::Unix { dir, port } => format!("pgsql:{}/.s.PGSQL.{port}", dir.display()),
            })
            .collect();
        let pools = hosts.iter().map(|_| Pool::new(o.settings.connections, idle)).collect();
        Some(PgsqlSource { hosts, servers, query: Arc::new(query?), pools })
    }

    async fn connect(&self, h: &Host) -> Result<PgConn, Failure> {
        let server = |e: String| Failure::Server(e);
        let io: Box<dyn Io> = match &h.target {
            Target::Unix { dir, port } => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                Box::new(
                    UnixStream::connect(&path)
                        .await
                        .map_err(|e| server(format!("connect {}: {e}", path.display())))?,
                )
            }
            Target::Tcp { host, port } => {
                let tcp = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| server(format!("connect: {e}")))?;
                let _ = tcp.set_nodelay(true);
                match (&h.tls, h.ssl) {
                    (Some(config), mode) if mode != SslMode::Disable => {
                        negotiate(tcp, host, config.clone(), mode).await?
                    }
                    _ => Box::new(tcp),
                }
            }
        };
        let stream = Bounded::new(io, self.query.reply_limit);
        let mut cfg = tokio_postgres::Config::new();
        cfg.user(&h.user)
            .dbname(&h.dbname)
            .application_name("sluice")
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        if let Some(p) = &h.password {
            cfg.password(p);
        }
        let (client, mut connection) = cfg.connect_raw(stream, NoTls).await.map_err(|e| server(chain(&e)))?;
        // The connection ends when the client is dropped (closed by the
        // pool, or after a failed lookup), or with an error, which is kept
        // before the connection is dropped: the client sees it closed only
        // then, and the lookup can tell why (an oversized reply).
        let ended = Arc::new(std::sync::Mutex::new(None));
        let why = ended.clone();
        tokio::spawn(async move {
            if let Err(e) = (&mut connection).await {
                *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain(&e));
            }
            drop(connection);
        });
        let show = client
            .simple_query("SHOW standard_conforming_strings")
            .await
            .map_err(|e| server(e.to_string()))?;
        let conforming = show.iter().any(|m| match m {
            SimpleQueryMessage::Row(r) => r.try_get(0).ok().flatten() == Some("on"),
            _ => false,
        });
        Ok(PgConn { client, conforming, ended })
    }

    async fn lookup(&self, server: usize, key: &str) -> Result<Option<String>, Failure> {
        let h = &self.hosts[server];
        let mut slot = self.pools[server].slot().await;
        let mut conn = match slot.take() {
            Some(c) if !c.client.is_closed() => c,
            _ => self.connect(h).await?,
        };
        let answer = match self.run(&conn, key).await {
            Err(Retry::Stale) => {
                // The server closed the idle connection: one fresh try.
                conn = self.connect(h).await?;
                self.run(&conn, key).await.map_err(Retry::into_failure)?
            }
            other => other.map_err(Retry::into_failure)?,
        };
        slot.release(conn);
        Ok(answer)
    }

    async fn run(&self, conn: &PgConn, key: &str) -> Result<Option<String>, Retry> {
        let conforming = conn.conforming;
        let Some(sql) = self.query.expand(key, &|s, out| escape(s, conforming, out)) else { return Ok(None) };
        let q = &self.query;
        let mut collect = Collect::new(&q.result, &q.needs, key, q.expansion_limit, q.reply_limit);
        let classify = |e| classify(e, conn);
        let stream = conn.client.simple_query_raw(&sql).await.map_err(classify)?;
        futures::pin_mut!(stream);
        while let Some(m) = stream.next().await {
            if let SimpleQueryMessage::Row(row) = m.map_err(classify)? {
                for i in 0..row.len() {
                    let v = row.try_get(i).map_err(|e| Retry::Fail(Failure::Server(e.to_string())))?;
                    collect.push(v).map_err(Retry::Fail)?;
                }
            }
        }
        Ok(collect.finish())
    }
}

/// A failed query: `Stale` when the connection was found closed before
/// anything was sent on it.
enum Retry {
    Stale,
    Fail(Failure),
}

impl Retry {
    fn into_failure(self) -> Failure {
        match self {
            Retry::Stale => Failure::Server("connection closed by the server".into()),
            Retry::Fail(f) => f,
        }
    }
}

/// An error with its causes: tokio-postgres says "error communicating
/// with the server" and keeps the reason as the source.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

fn classify(e: tokio_postgres::Error, conn: &PgConn) -> Retry {
    if let Some(db) = e.as_db_error() {
        // The server refused the query (a syntax error, a missing table):
        // it works, the table's query does not.
        return Retry::Fail(Failure::Answer(format!("query failed: {}", db.message())));
    }
    if e.is_closed() {
        return match conn.ended.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            // The reply was refused: asking again would get it again.
            Some(why) if why.contains("sluice_table_reply_size_limit") => Retry::Fail(Failure::Answer(why)),
            Some(why) => Retry::Fail(Failure::Server(why)),
            None => Retry::Stale,
        };
    }
    Retry::Fail(Failure::Server(chain(&e)))
}

/// `PQescapeStringConn` for a connection with or without
/// `standard_conforming_strings`.
fn escape(s: &str, conforming: bool, out: &mut String) {
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' if !conforming => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
}

/// Asks for TLS (PostgreSQL's SSLRequest) and starts it when the server
/// agrees; `prefer` goes on in plain text when it does not.
async fn negotiate(
    mut tcp: TcpStream,
    host: &str,
    config: Arc<rustls::ClientConfig>,
    mode: SslMode,
) -> Result<Box<dyn Io>, Failure> {
    let server = |e: String| Failure::Server(e);
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .map_err(|e| server(format!("SSLRequest: {e}")))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(|e| server(format!("SSLRequest: {e}")))?;
    match answer[0] {
        b'S' => {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| server(format!("TLS server name {host}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| server(format!("TLS handshake: {e}")))?;
            Ok(Box::new(tls))
        }
        b'N' if mode == SslMode::Prefer => Ok(Box::new(tcp)),
        b'N' => Err(server("the server does not support SSL (sslmode requires it)".into())),
        other => Err(server(format!("unexpected answer 0x{other:02x} to SSLRequest"))),
    }
}

/// `inet:host:port`, `host:port`, `host`, `[v6]:port`, `unix:/dir`,
/// `/dir` (a socket directory, as libpq reads a host starting with `/`).
fn parse_plain(w: &str) -> Result<Target, String> {
    let d = w.strip_prefix("unix:").or_else(|| w.strip_prefix("inet:")).unwrap_or(w);
    if d.is_empty() || d.starts_with('/') {
        let dir = if d.is_empty() { "/var/run/postgresql" } else { d };
        return Ok(Target::Unix { dir: PathBuf::from(dir), port: 5432 });
    }
    if d.starts_with('[') || d.matches(':').count() == 1 {
        let (host, port) = super::super::super::values::split_host_port(d)?;
        let host = host.filter(|h| !h.is_empty()).ok_or("missing host")?;
        let port: u16 = port.parse().map_err(|_| format!("bad port \"{port}\""))?;
        return Ok(Target::Tcp { host: host.to_owned(), port });
    }
    if d.contains(':') {
        return Err("write an IPv6 address in brackets, [address]:port".into());
    }
    Ok(Target::Tcp { host: d.to_owned(), port: 5432 })
}

type Parsed = (Target, Option<String>, Option<String>, Option<String>, SslMode, TlsFiles);

/// `postgresql://[user[:password]@][host][:port][/dbname][?param=value&...]`
/// with one host; the parameters libpq has that matter here (`host`,
/// `port`, `user`, `password`, `dbname`, `sslmode`, `sslrootcert`,
/// `sslcert`, `sslkey`; `connect_timeout` and `application_name` are
/// accepted and left to sluice's own settings). Files are relative to the
/// configuration directory.
fn parse_uri(uri: &str, dir: &std::path::Path) -> Result<Parsed, String> {
    let rest = uri
        .strip_prefix("postgresql://")
        .or_else(|| uri.strip_prefix("postgres://"))
        .ok_or("only postgresql:// URIs are supported")?;
    let (rest, params) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (mut user, mut password) = (None, None);
    if let Some(u) = userinfo {
        let (name, pw) = u.split_once(':').map_or((u, None), |(n, p)| (n, Some(p)));
        user = Some(percent_decode(name)?).filter(|s| !s.is_empty());
        password = pw.map(percent_decode).transpose()?;
    }
    if hostport.contains(',') {
        return Err("give one host per URI (list several URIs in hosts instead)".into());
    }
    let mut target = if hostport.is_empty() {
        Target::Unix { dir: "/var/run/postgresql".into(), port: 5432 }
    } else {
        parse_plain(&percent_decode(hostport)?)?
    };
    let mut dbname = Some(percent_decode(db)?).filter(|s| !s.is_empty());
    let mut ssl = SslMode::Prefer;
    let mut files = (None, None, None);
    for pair in params.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("\"{pair}\": expected name=value"))?;
        let v = percent_decode(v)?;
        match k {
            "host" => {
                let port = match &target {
                    Target::Tcp { port, .. } | Target::Unix { port, .. } => *port,
                };
                target = match parse_plain(&v)? {
                    Target::Tcp { host, .. } => Target::Tcp { host, port },
                    Target::Unix { dir, .. } => Target::Unix { dir, port },
                };
            }
            "port" => {
                let p: u16 = v.parse().map_err(|_| format!("bad port \"{v}\""))?;
                match &mut target {
                    Target::Tcp { port, .. } | Target::Unix { port, .. } => *port = p,
                }
            }
            "user" => user = Some(v),
            "password" => password = Some(v),
            "dbname" => dbname = Some(v),
            "sslmode" => {
                ssl = match v.as_str() {
                    "disable" | "allow" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    _ => return Err(format!("unknown sslmode \"{v}\"")),
                }
            }
            "sslrootcert" => files.0 = Some(super::super::resolve(dir, &v)),
            "sslcert" => files.1 = Some(super::super::resolve(dir, &v)),
            "sslkey" => files.2 = Some(super::super::resolve(dir, &v)),
            "connect_timeout" | "application_name" => {}
            other => return Err(format!("unsupported URI parameter \"{other}\"")),
        }
    }
    if matches!(target, Target::Unix { .. }) {
        ssl = SslMode::Disable;
    }
    let files = TlsFiles { ca_file: files.0, ca_dir: None, cert: files.1, key: files.2 };
    Ok((target, user, password, dbname, ssl, files))
}

impl Source for PgsqlSource {
    fn servers(&self) -> &[String] {
        &self.servers
    }

    fn suppressed(&self, key: &str) -> bool {
        self.query.suppressed(key)
    }

    fn ask<'a>(&'a self, server: usize, key: &'a str) -> BoxFuture<'a, Result<Option<String>, Failure>> {
        Box::pin(self.lookup(server, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_as_postfix_reads_them() {
        assert_eq!(parse_plain("inet:db1:5433"), Ok(Target::Tcp { host: "db1".into(), port: 5433 }));
        assert_eq!(parse_plain("db1"), Ok(Target::Tcp { host: "db1".into(), port: 5432 }));
        assert_eq!(parse_plain("[::1]:5433"), Ok(Target::Tcp { host: "::1".into(), port: 5433 }));
        assert_eq!(
            parse_plain("unix:/run/postgresql"),
            Ok(Target::Unix { dir: "/run/postgresql".into(), port: 5432 })
        );
        assert_eq!(parse_plain("/tmp"), Ok(Target::Unix { dir: "/tmp".into(), port: 5432 }));
        assert!(parse_plain("::1:5432").is_err());
    }

    #[test]
    fn uris_carry_their_own_login_and_ssl() {
        let (t, u, p, d, ssl, _) = parse_uri(
            "postgresql://mail%40x:s3cr%3At@127.0.0.1:5433/users?sslmode=disable",
            std::path::Path::new("/"),
        )
        .unwrap();
        assert_eq!(t, Target::Tcp { host: "127.0.0.1".into(), port: 5433 });
        assert_eq!(
            (u.as_deref(), p.as_deref(), d.as_deref()),
            (Some("mail@x"), Some("s3cr:t"), Some("users"))
        );
        assert_eq!(ssl, SslMode::Disable);
        let (t, ..) =
            parse_uri("postgresql:///db?host=/run/pg&port=5434", std::path::Path::new("/")).unwrap();
        assert_eq!(t, Target::Unix { dir: "/run/pg".into(), port: 5434 });
        assert!(parse_uri("postgresql://a,b/db", std::path::Path::new("/")).is_err());
        assert!(parse_uri("postgresql://a/db?gssencmode=x", std::path::Path::new("/")).is_err());
        assert!(parse_uri("mysql://a/db", std::path::Path::new("/")).is_err());
    }

    #[test]
    fn escaping_follows_standard_conforming_strings() {
        let mut on = String::new();
        escape("o'brien\\x", true, &mut on);
        assert_eq!(on, "o''brien\\x");
        let mut off = String::new();
        escape("o'brien\\x", false, &mut off);
        assert_eq!(off, "o''brien\\\\x");
    }
}
