//! `socketmap:inet:host:port:name` and `socketmap:unix:/path:name`:
//! Sendmail's socket map protocol as socketmap_table(5) describes it. The
//! request is the netstring `name key`; the reply a netstring `OK value`,
//! `NOTFOUND `, or `TEMP`/`TIMEOUT`/`PERM reason` (a failed lookup).
//!
//! Owns the protocol and its limits: keys longer than 10000 bytes are not
//! looked up (Postfix's limit: "not found"), replies longer than
//! `sluice_table_reply_size_limit` (100000 bytes, Postfix's fixed limit)
//! fail the lookup before they are read. Connections are reused and closed
//! after 10 s idle, as Postfix's; a reused connection the server closed
//! meanwhile is reopened once. Keys are sent as given (no case folding):
//! a socketmap is a pattern table, asked with the full key only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

use super::pool::Pool;
use super::{DirectorySettings, Failure, Source};

/// Postfix's limit on a key.
const MAX_QUERY: usize = 10_000;
/// Postfix's idle time for socketmap connections.
const IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Inet { host: String, port: u16 },
    Unix(PathBuf),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}

type Conn = BufReader<Box<dyn Io>>;

#[derive(Debug)]
pub(crate) struct SocketmapSource {
    endpoint: Endpoint,
    map: String,
    servers: Vec<String>,
    max_reply: usize,
    pool: Pool<Conn>,
}

impl SocketmapSource {
    /// Parses `inet:host:port:name` or `unix:/path:name` (a relative
    /// path is under the configuration directory).
    pub fn parse(spec: &str, dir: &Path, settings: &DirectorySettings) -> Result<SocketmapSource, String> {
        let (rest, map) = spec
            .rsplit_once(':')
            .filter(|(_, m)| !m.is_empty())
            .ok_or_else(|| "expected inet:host:port:name or unix:/path:name".to_owned())?;
        let endpoint = if let Some(path) = rest.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            Endpoint::Unix(super::super::resolve(dir, path))
        } else if let Some(hp) = rest.strip_prefix("inet:") {
            let (host, port) = super::super::super::values::split_host_port(hp)?;
            let host = host.filter(|h| !h.is_empty()).ok_or_else(|| format!("\"{hp}\": missing host"))?;
            let port = super::super::super::values::parse_port(port)?;
            Endpoint::Inet { host: host.to_owned(), port }
        } else {
            return Err("expected inet:host:port:name or unix:/path:name".into());
        };
        let server = match &endpoint {
            Endpoint::Inet { host, port } if host.contains(':') => format!("inet:[{host}]:{port}"),
            Endpoint::Inet { host, port } => format!("inet:{host}:{port}"),
            Endpoint::Unix(p) => format!("unix:{}", p.display()),
        };
        Ok(SocketmapSource {
            endpoint,
            map: map.to_owned(),
            servers: vec![server],
            max_reply: settings.reply_limit,
            pool: Pool::new(settings.connections, IDLE),
        })
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let io: Box<dyn Io> = match &self.endpoint {
            Endpoint::Inet { host, port } => Box::new(
                TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| Failure::Server(format!("connect: {e}")))?,
            ),
            Endpoint::Unix(p) => {
                Box::new(UnixStream::connect(p).await.map_err(|e| Failure::Server(format!("connect: {e}")))?)
            }
        };
        Ok(BufReader::new(io))
    }

    async fn lookup(&self, key: &str) -> Result<Option<String>, Failure> {
        if key.len() > MAX_QUERY {
            tracing::warn!(target: "proxymap", "socketmap {}: key longer than {MAX_QUERY} bytes: not looked up", self.map);
            return Ok(None);
        }
        let request = netstring(&format!("{} {key}", self.map));
        let mut slot = self.pool.slot().await;
        let reused = slot.take();
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        let reply = match exchange(&mut conn, &request, self.max_reply).await {
            Ok(r) => r,
            // The server closed an idle connection: one fresh try.
            Err(Exchange::Closed) if was_reused => {
                conn = self.connect().await?;
                exchange(&mut conn, &request, self.max_reply).await.map_err(Exchange::into_failure)?
            }
            Err(e) => return Err(e.into_failure()),
        };
        slot.release(conn);
        parse_reply(&reply)
    }
}

impl Source for SocketmapSource {
    fn servers(&self) -> &[String] {
        &self.servers
    }

    fn folds(&self) -> bool {
        false
    }

    fn suppressed(&self, key: &str) -> bool {
        key.is_empty()
    }

    fn ask<'a>(&'a self, _server: usize, key: &'a str) -> BoxFuture<'a, Result<Option<String>, Failure>> {
        Box::pin(self.lookup(key))
    }
}

/// How a request/reply exchange failed.
#[derive(Debug)]
enum Exchange {
    /// End of stream before any of the reply.
    Closed,
    Failed(Failure),
}

impl Exchange {
    fn into_failure(self) -> Failure {
        match self {
            Exchange::Closed => Failure::Server("connection closed by the server".into()),
            Exchange::Failed(f) => f,
        }
    }
}

async fn exchange(conn: &mut Conn, request: &[u8], max: usize) -> Result<String, Exchange> {
    let io = |e: std::io::Error| Exchange::Failed(Failure::Server(e.to_string()));
    conn.get_mut().write_all(request).await.map_err(io)?;
    conn.get_mut().flush().await.map_err(io)?;
    read_netstring(conn, max).await
}

/// Encodes `text` as a netstring: `<length>:<text>,`.
fn netstring(text: &str) -> Vec<u8> {
    let mut out = format!("{}:", text.len()).into_bytes();
    out.extend_from_slice(text.as_bytes());
    out.push(b',');
    out
}

/// Reads one netstring of at most `max` bytes.
async fn read_netstring<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> Result<String, Exchange> {
    let bad = |m: String| Exchange::Failed(Failure::Server(m));
    let mut len: usize = 0;
    let mut digits = 0;
    loop {
        let mut b = [0u8; 1];
        match r.read(&mut b).await {
            Ok(0) if digits == 0 => return Err(Exchange::Closed),
            Ok(0) => return Err(bad("connection closed inside a reply".into())),
            Ok(_) => {}
            Err(e) => return Err(bad(e.to_string())),
        }
        match b[0] {
            d @ b'0'..=b'9' => {
                digits += 1;
                len = len.saturating_mul(10).saturating_add(usize::from(d - b'0'));
                if digits > 12 {
                    return Err(bad("netstring length too long".into()));
                }
            }
            b':' if digits > 0 => break,
            other => return Err(bad(format!("bad netstring: unexpected byte 0x{other:02x}"))),
        }
    }
    if len > max {
        return Err(Exchange::Failed(Failure::Answer(format!(
            "reply of {len} bytes is longer than {max} (sluice_table_reply_size_limit)"
        ))));
    }
    let mut body = vec![0u8; len + 1];
    r.read_exact(&mut body).await.map_err(|e| bad(format!("reading the reply: {e}")))?;
    if body.pop() != Some(b',') {
        return Err(bad("bad netstring: missing ','".into()));
    }
    String::from_utf8(body).map_err(|_| bad("reply is not UTF-8".into()))
}

/// The meaning of a reply.
fn parse_reply(reply: &str) -> Result<Option<String>, Failure> {
    let (status, payload) = reply.split_once(' ').unwrap_or((reply, ""));
    match status {
        "OK" => Ok(Some(payload.to_owned())),
        "NOTFOUND" => Ok(None),
        "TEMP" | "TIMEOUT" | "PERM" => {
            let class = match status {
                "TEMP" => "temporary",
                "TIMEOUT" => "timeout",
                _ => "permanent",
            };
            let reason = printable(payload.trim_start());
            Err(Failure::Answer(if reason.is_empty() {
                format!("socketmap server {class} error")
            } else {
                format!("socketmap server {class} error: {reason}")
            }))
        }
        _ => Err(Failure::Server(format!("socketmap server unknown reply: {}", printable(reply)))),
    }
}

/// At most 200 characters, anything unprintable as `?` (for logs).
fn printable(s: &str) -> String {
    s.chars().take(200).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_as_postfix_writes_them() {
        let s = DirectorySettings::default();
        let m = SocketmapSource::parse("inet:127.0.0.1:8000:virtuser", Path::new("/etc/sluice"), &s).unwrap();
        assert_eq!(m.endpoint, Endpoint::Inet { host: "127.0.0.1".into(), port: 8000 });
        assert_eq!(m.map, "virtuser");
        let m = SocketmapSource::parse("inet:[::1]:8000:x", Path::new("/etc/sluice"), &s).unwrap();
        assert_eq!(m.servers, vec!["inet:[::1]:8000"]);
        let m = SocketmapSource::parse("unix:run/map.sock:users", Path::new("/etc/sluice"), &s).unwrap();
        assert_eq!(m.endpoint, Endpoint::Unix("/etc/sluice/run/map.sock".into()));
        assert!(SocketmapSource::parse("inet:host:port", Path::new("/"), &s).is_err());
        assert!(SocketmapSource::parse("tcp:host:1:x", Path::new("/"), &s).is_err());
        assert!(SocketmapSource::parse("unix::x", Path::new("/"), &s).is_err());
    }

    #[test]
    fn replies_mean_what_socketmap_table_5_says() {
        assert_eq!(parse_reply("OK lmtp:[mbx1]:24"), Ok(Some("lmtp:[mbx1]:24".into())));
        assert_eq!(parse_reply("OK"), Ok(Some(String::new())));
        assert_eq!(parse_reply("NOTFOUND "), Ok(None));
        assert!(
            matches!(parse_reply("TEMP db down"), Err(Failure::Answer(m)) if m.ends_with("temporary error: db down"))
        );
        assert!(matches!(parse_reply("PERM"), Err(Failure::Answer(_))));
        assert!(matches!(parse_reply("WHAT"), Err(Failure::Server(_))));
    }

    #[tokio::test]
    async fn netstrings_are_bounded() {
        assert_eq!(netstring("m k"), b"3:m k,");
        let mut ok: &[u8] = b"5:hello,";
        assert_eq!(read_netstring(&mut ok, 100).await.unwrap(), "hello");
        let mut long: &[u8] = b"500:...";
        assert!(matches!(read_netstring(&mut long, 100).await, Err(Exchange::Failed(Failure::Answer(_)))));
        let mut bad: &[u8] = b"3:abcX";
        assert!(matches!(read_netstring(&mut bad, 100).await, Err(Exchange::Failed(Failure::Server(_)))));
        let mut empty: &[u8] = b"";
        assert!(matches!(read_netstring(&mut empty, 100).await, Err(Exchange::Closed)));
    }
}
