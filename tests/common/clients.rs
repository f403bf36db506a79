//! SMTP clients for tests: a raw async client that sends exact bytes and
//! reads replies (for pipelining, smuggling and protocol abuse), and
//! runners for the real clients installed on the machine (Python's
//! smtplib, swaks).

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// One reply: code and text lines (without the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The whole reply as `code text` of the last line (and all lines for
    /// multiline replies, joined with `|`).
    pub fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join("|"))
    }
}

/// A client that writes exactly the bytes it is given.
pub struct Raw {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// How long a test waits for a reply before failing (not a timing
/// assertion: a hang guard).
pub const REPLY_WAIT: Duration = Duration::from_secs(20);

impl Raw {
    /// Connects without reading the greeting.
    pub async fn connect_silent(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.expect("connect");
        let (r, w) = s.into_split();
        Raw { reader: BufReader::new(r), writer: w }
    }

    /// Connects from `source` (a loopback address: 127.0.0.0/8 gives a
    /// test as many IPv4 clients as it needs) without reading the greeting.
    pub async fn connect_from(addr: SocketAddr, source: &str) -> Raw {
        let ip: std::net::IpAddr = source.parse().expect("source address");
        let socket =
            if ip.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
                .expect("socket");
        socket.bind(SocketAddr::new(ip, 0)).expect("bind the source address");
        let s = socket.connect(addr).await.expect("connect");
        let (r, w) = s.into_split();
        Raw { reader: BufReader::new(r), writer: w }
    }

    /// Connects and reads the 220 greeting.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let mut c = Raw::connect_silent(addr).await;
        let g = c.reply().await.expect("greeting");
        assert_eq!(g.code, 220, "greeting {g:?}");
        c
    }

    /// Connects, reads the greeting and says EHLO.
    pub async fn ehlo(addr: SocketAddr) -> Raw {
        let mut c = Raw::connect(addr).await;
        c.send(b"EHLO client.test\r\n").await;
        let r = c.reply().await.expect("ehlo reply");
        assert_eq!(r.code, 250, "{r:?}");
        c
    }

    /// Writes bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// Writes bytes, ignoring errors (the server may have closed).
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).await.is_ok()
    }

    /// Reads one (possibly multiline) reply; `None` at end of stream.
    pub async fn reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(REPLY_WAIT, self.reader.read_line(&mut line))
                .await
                .expect("reply within the hang guard")
                .ok()?;
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            assert!(line.len() >= 3, "short reply line {line:?}");
            let code: u16 = line[..3].parse().unwrap_or_else(|_| panic!("bad reply line {line:?}"));
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if !more {
                return Some(Reply { code, lines });
            }
        }
    }

    /// Sends a command line (CRLF added) and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await.unwrap_or_else(|| panic!("no reply to {line:?}"))
    }

    /// Reads `n` replies.
    pub async fn replies(&mut self, n: usize) -> Vec<Reply> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.reply().await.expect("reply"));
        }
        out
    }

    /// True when the server has closed the connection (reads to EOF,
    /// discarding anything before it).
    pub async fn closed(&mut self) -> bool {
        let mut buf = String::new();
        loop {
            buf.clear();
            match tokio::time::timeout(REPLY_WAIT, self.reader.read_line(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// The underlying halves, for STARTTLS.
    pub fn into_stream(self) -> TcpStream {
        let r = self.reader.into_inner();
        r.reunite(self.writer).expect("same stream")
    }
}

/// Runs a Python 3 script with arguments; the script gets the server's
/// host and port as `sys.argv[1]` and `sys.argv[2]`.
pub async fn python(addr: SocketAddr, script: &str, extra: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-c").arg(script).arg(addr.ip().to_string()).arg(addr.port().to_string()).args(extra);
    cmd.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("python finishes")
        .expect("python3 runs")
}

/// Runs swaks against the server with extra arguments.
pub async fn swaks(addr: SocketAddr, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new("swaks");
    cmd.arg("--server").arg(addr.ip().to_string()).arg("--port").arg(addr.port().to_string());
    cmd.args(["--helo", "client.test", "--timeout", "20"]).args(args);
    cmd.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("swaks finishes")
        .expect("swaks runs")
}

/// Output as text for assertions.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
