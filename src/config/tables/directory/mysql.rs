//! `mysql:/etc/sluice/file.cf` (mysql_table(5)): `hosts`, `user`,
//! `password`, `dbname`, `query` (or the older `select_field`/`table`/
//! `where_field`/`additional_conditions`), `result_format`,
//! `expansion_limit`, `domain`, `require_result_set`, the `tls_*`
//! settings, and the undocumented `charset` and `idle_interval`.
//!
//! Owns the MySQL/MariaDB side: hosts as Postfix reads them
//! (`unix:/path`, `inet:host:port`, `host[:port]`; `localhost` means the
//! default UNIX socket, as libmysqlclient does), tried in random order;
//! queries sent as text queries, with keys escaped as
//! `mysql_real_escape_string` does (backslash escapes, or doubled quotes
//! when the session's sql_mode has NO_BACKSLASH_ESCAPES); the first result
//! set read as text, a second one that returns data an error (stored
//! procedures, as Postfix). Packets larger than
//! `sluice_table_reply_size_limit` fail the read (mysql_async's
//! `max_allowed_packet`). Not read: `option_file`/`option_group` (my.cnf
//! client settings; give them in the `.cf` file).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, SslOpts, Value};

use super::cf::CfFile;
use super::pool::Pool;
use super::{Collect, Failure, Kind, Open, Source, SqlQuery};

/// Where MariaDB and MySQL put their socket on Debian.
const DEFAULT_SOCKET: &str = "/run/mysqld/mysqld.sock";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Tcp { host: String, port: u16 },
    Unix(String),
}

/// One pooled connection and how keys are escaped on it.
struct MyConn {
    conn: Conn,
    /// sql_mode has NO_BACKSLASH_ESCAPES.
    no_backslash: bool,
}

impl std::fmt::Debug for MyConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MyConn").field("no_backslash", &self.no_backslash).finish()
    }
}

#[derive(Debug)]
pub(crate) struct MysqlSource {
    targets: Vec<Target>,
    servers: Vec<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: String,
    ssl: Option<SslOpts>,
    require_result_set: bool,
    query: Arc<SqlQuery>,
    pools: Vec<Pool<MyConn>>,
}

impl MysqlSource {
    pub fn from_cf(cf: &CfFile, o: &mut Open<'_, '_>) -> Option<MysqlSource> {
        let query = SqlQuery::from_cf(cf, Kind::Mysql, o);
        let charset = cf.str("charset", "utf8mb4").to_ascii_lowercase();
        if charset != "utf8mb4" && charset != "utf8" && charset != "utf8mb3" {
            o.warnings.push(
                cf.diag(
                    "charset",
                    format!("sluice always uses utf8mb4 (the server converts from {charset})"),
                ),
            );
        }
        if cf.get("option_file").is_some_and(|f| !f.is_empty()) {
            o.warnings.push(
                cf.diag("option_file", "not read by sluice: give hosts, user and password in the .cf file"),
            );
        }
        if cf.has("retry_interval") {
            o.warnings.push(cf.diag(
                "retry_interval",
                "not used: sluice_table_breaker_cooldown decides when a failing host is asked again",
            ));
        }
        if cf.get("tls_ciphers").is_some_and(|c| !c.is_empty()) {
            o.warnings
                .push(cf.diag("tls_ciphers", "not used: rustls chooses among its own safe cipher suites"));
        }
        let idle = Duration::from_secs(cf.int("idle_interval", 60, 1, o.errors) as u64);
        let require_result_set = cf.bool("require_result_set", true, o.errors);
        let verify = cf.has("tls_verify_cert").then(|| cf.bool("tls_verify_cert", false, o.errors));
        let ssl = tls_opts(cf, o.dir, verify);
        let dbname = cf.str("dbname", "").to_owned();
        if dbname.is_empty() {
            o.errors.push(cf.file_diag("dbname is not set"));
        }
        let words: Vec<&str> =
            cf.str("hosts", "").split([',', ' ', '\t']).filter(|w| !w.is_empty()).collect();
        let words = if words.is_empty() { vec!["localhost"] } else { words };
        let mut targets = Vec::new();
        for w in words {
            match parse_host(w) {
                Ok(t) => targets.push(t),
                Err(e) => o.errors.push(cf.diag("hosts", format!("\"{w}\": {e}"))),
            }
        }
        let servers = targets
            .iter()
            .map(|t| match t {
                Target::Tcp { host, port } if host.contains(':') => format!("mysql:[{host}]:{port}"),
                Target::Tcp { host, port } => format!("mysql:{host}:{port}"),
                Target::Unix(p) => format!("mysql:unix:{p}"),
            })
            .collect();
        let pools = targets.iter().map(|_| Pool::new(o.settings.connections, idle)).collect();
        Some(MysqlSource {
            targets,
            servers,
            user: cf.get("user").filter(|u| !u.is_empty()).map(str::to_owned),
            password: cf.get("password").filter(|p| !p.is_empty()).map(str::to_owned),
            dbname,
            ssl,
            require_result_set,
            query: Arc::new(query?),
            pools,
        })
    }

    async fn connect(&self, t: &Target) -> Result<MyConn, Failure> {
        let mut opts = OptsBuilder::default()
            .user(self.user.clone())
            .pass(self.password.clone())
            .db_name(Some(self.dbname.clone()))
            .prefer_socket(false)
            .stmt_cache_size(0)
            .max_allowed_packet(Some(self.query.reply_limit.max(1024)))
            .ssl_opts(self.ssl.clone());
        opts = match t {
            Target::Tcp { host, port } => opts.ip_or_hostname(host.clone()).tcp_port(*port),
            Target::Unix(p) => opts.socket(Some(p.clone())),
        };
        let mut conn = Conn::new(opts).await.map_err(|e| Failure::Server(format!("connect: {e}")))?;
        let mode: Option<String> = conn
            .query_first("SELECT @@SESSION.sql_mode")
            .await
            .map_err(|e| Failure::Server(e.to_string()))?;
        let no_backslash = mode.is_some_and(|m| m.to_ascii_uppercase().contains("NO_BACKSLASH_ESCAPES"));
        Ok(MyConn { conn, no_backslash })
    }

    async fn lookup(&self, server: usize, key: &str) -> Result<Option<String>, Failure> {
        let mut slot = self.pools[server].slot().await;
        let reused = slot.take();
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(c) => c,
            None => self.connect(&self.targets[server]).await?,
        };
        let answer = match self.run(&mut conn, key).await {
            // The server closed the idle connection: one fresh try.
            Err(Failure::Server(_)) if was_reused => {
                conn = self.connect(&self.targets[server]).await?;
                self.run(&mut conn, key).await?
            }
            other => other?,
        };
        slot.release(conn);
        Ok(answer)
    }

    async fn run(&self, c: &mut MyConn, key: &str) -> Result<Option<String>, Failure> {
        let no_backslash = c.no_backslash;
        let Some(sql) = self.query.expand(key, &|s, out| escape(s, no_backslash, out)) else {
            return Ok(None);
        };
        let q = &self.query;
        let mut collect = Collect::new(&q.result, &q.needs, key, q.expansion_limit, q.reply_limit);
        let mut failed: Option<Failure> = None;
        let mut sets = 0;
        let mut result = c.conn.query_iter(sql).await.map_err(classify)?;
        while !result.is_empty() {
            let has_data = !result.columns_ref().is_empty();
            if has_data {
                sets += 1;
            }
            let first = sets == 1 && has_data;
            result
                .for_each(|row: Row| {
                    if !first || failed.is_some() {
                        return;
                    }
                    for i in 0..row.len() {
                        if let Err(e) = collect.push(row.as_ref(i).and_then(text).as_deref()) {
                            failed = Some(e);
                            return;
                        }
                    }
                })
                .await
                .map_err(classify)?;
        }
        drop(result);
        if let Some(f) = failed {
            return Err(f);
        }
        if sets > 1 {
            return Err(Failure::Answer(
                "query failed: multiple result sets returning data are not supported".into(),
            ));
        }
        if sets == 0 && self.require_result_set {
            return Err(Failure::Answer(
                "query failed: query returned no result set (require_result_set = yes)".into(),
            ));
        }
        Ok(collect.finish())
    }
}

fn classify(e: mysql_async::Error) -> Failure {
    match e {
        mysql_async::Error::Server(s) => Failure::Answer(format!("query failed: {}", s.message)),
        other => Failure::Server(other.to_string()),
    }
}

/// A text-protocol value as `mysql_fetch_row` gives it: NULL is none.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(d) => Some(d.to_string()),
        other => Some(other.as_sql(true).trim_matches('\'').to_owned()),
    }
}

/// `mysql_real_escape_string`: backslash escapes, or only doubled quotes
/// under NO_BACKSLASH_ESCAPES.
fn escape(s: &str, no_backslash: bool, out: &mut String) {
    for c in s.chars() {
        match (c, no_backslash) {
            ('\'', true) => out.push_str("''"),
            (c, true) => out.push(c),
            ('\0', false) => out.push_str("\\0"),
            ('\n', false) => out.push_str("\\n"),
            ('\r', false) => out.push_str("\\r"),
            ('\\', false) => out.push_str("\\\\"),
            ('\'', false) => out.push_str("\\'"),
            ('"', false) => out.push_str("\\\""),
            ('\u{1a}', false) => out.push_str("\\Z"),
            (c, false) => out.push(c),
        }
    }
}

/// `unix:/path`, `inet:host[:port]`, `host[:port]`; `localhost` is the
/// default socket.
fn parse_host(w: &str) -> Result<Target, String> {
    if let Some(p) = w.strip_prefix("unix:") {
        if p.is_empty() {
            return Err("unix: needs a socket path".into());
        }
        return Ok(Target::Unix(p.to_owned()));
    }
    let d = w.strip_prefix("inet:").unwrap_or(w);
    let (host, port) = if d.starts_with('[') || d.matches(':').count() == 1 {
        let (h, p) = super::super::super::values::split_host_port(d)?;
        (
            h.filter(|h| !h.is_empty()).ok_or("missing host")?,
            p.parse::<u16>().map_err(|_| format!("bad port \"{p}\""))?,
        )
    } else if d.contains(':') {
        return Err("write an IPv6 address in brackets, [address]:port".into());
    } else {
        (d, 3306)
    };
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(Target::Unix(DEFAULT_SOCKET.into()));
    }
    Ok(Target::Tcp { host: host.to_owned(), port })
}

/// TLS when any of the `tls_*` files is set, as Postfix does; the
/// certificate is checked only with `tls_verify_cert = yes`.
fn tls_opts(cf: &CfFile, dir: &std::path::Path, verify: Option<bool>) -> Option<SslOpts> {
    let file = |n: &str| cf.get(n).filter(|v| !v.is_empty()).map(|v| super::super::resolve(dir, v));
    let (key, cert, ca, capath) =
        (file("tls_key_file"), file("tls_cert_file"), file("tls_CAfile"), file("tls_CApath"));
    if key.is_none() && cert.is_none() && ca.is_none() && capath.is_none() && cf.get("tls_ciphers").is_none()
    {
        return None;
    }
    let mut roots = Vec::new();
    if let Some(ca) = ca {
        roots.push(ca.into());
    } else if let Some(dir) = capath
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        roots.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).map(Into::into));
    }
    let verify = verify.unwrap_or(false);
    let mut ssl = SslOpts::default()
        .with_root_certs(roots)
        .with_danger_accept_invalid_certs(!verify)
        .with_danger_skip_domain_validation(!verify);
    if let (Some(cert), Some(key)) = (cert, key) {
        ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(cert.into(), key.into())));
    }
    Some(ssl)
}

impl Source for MysqlSource {
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
        assert_eq!(parse_host("inet:db1:3307"), Ok(Target::Tcp { host: "db1".into(), port: 3307 }));
        assert_eq!(parse_host("127.0.0.1"), Ok(Target::Tcp { host: "127.0.0.1".into(), port: 3306 }));
        assert_eq!(parse_host("inet:localhost:3306"), Ok(Target::Unix(DEFAULT_SOCKET.into())));
        assert_eq!(parse_host("unix:/tmp/my.sock"), Ok(Target::Unix("/tmp/my.sock".into())));
        assert_eq!(parse_host("[::1]:3307"), Ok(Target::Tcp { host: "::1".into(), port: 3307 }));
        assert!(parse_host("::1:3306").is_err());
    }

    #[test]
    fn escaping_as_mysql_real_escape_string() {
        let mut out = String::new();
        escape("a'b\"c\\d\ne\0", false, &mut out);
        assert_eq!(out, "a\\'b\\\"c\\\\d\\ne\\0");
        let mut out = String::new();
        escape("a'b\\c", true, &mut out);
        assert_eq!(out, "a''b\\c");
    }
}
