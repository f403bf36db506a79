//! The floor of `cpu.sh`'s relay: the least an MTA built like sluice can
//! spend per message on this machine, for `cpu.sh FLOOR=1`.
//!
//! It keeps the relay's system calls, thread hand-offs and TCP traffic and
//! drops everything else. It answers SMTP with canned replies (no parsing
//! beyond the verb, no policy, no headers added), appends each message to
//! a plain file and `fdatasync`s it before the `250` (group commit on one
//! writer thread, as sluice's queue does), relays it over LMTP on kept
//! connections to the sink (the commands in one write, the body in one
//! more), appends a removal record (synced, as sluice's delivery result
//! is), and writes the seven log lines sluice writes, one `write(2)` each.
//! The runtime is tokio's multi-threaded one with its default worker
//! count, like sluice's.
//!
//! What it leaves out is what separates sluice from this floor: the
//! queue's RocksDB writes, the SMTP parser, the Received: header, the
//! header parse, routing, the delivery gate and scheduler, the log
//! formatting and metrics. It checks nothing, so it is a bench tool only:
//! it listens on 127.0.0.1 and relays to the loopback port it is given.
//!
//! Usage: `relay_floor PORT LMTP_PORT LOG_FILE SPOOL_FILE [CONNECTIONS]`
//! (CONNECTIONS: kept LMTP connections, default 5, sluice's initial
//! destination concurrency).
//!
//! To see what each part of the floor costs, `FLOOR_OMIT` (a comma list)
//! leaves parts out: `sync` (no `fdatasync`), `log` (only the `removed`
//! line, which the bench counts), `removal` (no removal record).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// One group-committed append: the bytes, and who waits for the sync.
struct Append {
    bytes: Vec<u8>,
    done: oneshot::Sender<Vec<u8>>,
}

/// A message accepted and synced, on its way to the LMTP sink.
struct Accepted {
    id: u64,
    from: String,
    to: String,
    body: Vec<u8>,
}

struct Floor {
    log: File,
    /// FLOOR_OMIT=log: only the `removed` lines.
    quiet: bool,
    /// FLOOR_OMIT=removal: no removal record.
    no_removal: bool,
    writer: std_mpsc::Sender<Append>,
    lanes: Vec<mpsc::UnboundedSender<Accepted>>,
    next_lane: AtomicUsize,
    next_id: AtomicUsize,
}

impl Floor {
    /// One log line, one `write(2)`, as sluice writes its lines.
    fn log(&self, line: String) {
        if self.quiet && !line.ends_with(": removed") {
            return;
        }
        let mut line = line;
        line.push('\n');
        let _ = (&self.log).write_all(line.as_bytes());
    }

    /// Appends BYTES to the spool file, waits until they are synced, and
    /// gives them back (no copy for the writer).
    async fn append(&self, bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        let (done, synced) = oneshot::channel();
        self.writer.send(Append { bytes, done }).context("writer thread gone")?;
        synced.await.context("writer thread gone")
    }
}

/// The writer thread: takes every append waiting, writes them in one call,
/// syncs once, then answers each.
fn write_loop(mut file: File, appends: std_mpsc::Receiver<Append>, sync: bool) {
    let mut buf = Vec::new();
    while let Ok(first) = appends.recv() {
        let mut group = vec![first];
        group.extend(appends.try_iter());
        buf.clear();
        for a in &group {
            buf.extend_from_slice(&a.bytes);
        }
        if file.write_all(&buf).and_then(|()| if sync { file.sync_data() } else { Ok(()) }).is_err() {
            return;
        }
        for a in group {
            let _ = a.done.send(a.bytes);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: relay_floor PORT LMTP_PORT LOG_FILE SPOOL_FILE [CONNECTIONS]");
    }
    let port: u16 = args[0].parse().context("PORT")?;
    let lmtp_port: u16 = args[1].parse().context("LMTP_PORT")?;
    let log = OpenOptions::new().create(true).append(true).open(&args[2]).context("LOG_FILE")?;
    let spool = OpenOptions::new().create(true).append(true).open(&args[3]).context("SPOOL_FILE")?;
    let conns: usize = args.get(4).map_or(Ok(5), |c| c.parse()).context("CONNECTIONS")?;

    let omit = std::env::var("FLOOR_OMIT").unwrap_or_default();
    let omits = |part: &str| omit.split(',').any(|o| o == part);
    let (quiet, no_removal, sync) = (omits("log"), omits("removal"), !omits("sync"));
    let (writer, appends) = std_mpsc::channel();
    std::thread::Builder::new()
        .name("floor-writer".into())
        .spawn(move || write_loop(spool, appends, sync))?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let mut lanes = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..conns {
            let (tx, rx) = mpsc::unbounded_channel();
            lanes.push(tx);
            receivers.push(rx);
        }
        let floor = Arc::new(Floor {
            log,
            quiet,
            no_removal,
            writer,
            lanes,
            next_lane: AtomicUsize::new(0),
            next_id: AtomicUsize::new(1),
        });
        for rx in receivers {
            let f = floor.clone();
            tokio::spawn(async move {
                if let Err(e) = deliver_loop(lmtp_port, rx, &f).await {
                    eprintln!("relay_floor: delivery: {e:#}");
                    std::process::exit(1);
                }
            });
        }
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, peer) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let f = floor.clone();
            tokio::spawn(async move {
                f.log(format!("connect from localhost[{}]", peer.ip()));
                let _ = session(stream, &f).await;
                f.log(format!("disconnect from localhost[{}]", peer.ip()));
            });
        }
    })
}

/// The address inside `MAIL FROM:<...>` or `RCPT TO:<...>`.
fn angle(line: &[u8]) -> String {
    let open = line.iter().position(|&b| b == b'<').map_or(0, |i| i + 1);
    let close = line.iter().rposition(|&b| b == b'>').unwrap_or(line.len()).max(open);
    String::from_utf8_lossy(&line[open..close]).into_owned()
}

/// One SMTP session: canned replies, replies to a pipelined batch in one
/// write, the message synced before its `250`.
async fn session(mut s: TcpStream, f: &Floor) -> anyhow::Result<()> {
    let mut input = Vec::with_capacity(8192);
    let mut out = b"220 floor.test ESMTP\r\n".to_vec();
    let (mut from, mut to) = (String::new(), String::new());
    let mut in_data = false;
    loop {
        let mut start = 0;
        loop {
            let rest = &input[start..];
            if in_data {
                let end = if rest.starts_with(b".\r\n") {
                    Some(0)
                } else {
                    memchr::memmem::find(rest, b"\r\n.\r\n").map(|i| i + 2)
                };
                let Some(end) = end else { break };
                let body = rest[..end].to_vec();
                start += end + 3;
                in_data = false;
                let id = f.next_id.fetch_add(1, Ordering::Relaxed) as u64;
                f.log(format!("{id:X}: client=localhost[127.0.0.1]"));
                f.log(format!("{id:X}: message-id=<{id:X}@floor.test>"));
                let body = f.append(body).await?;
                f.log(format!("{id:X}: from=<{from}>, size={}, nrcpt=1 (queue active)", body.len()));
                out.extend_from_slice(format!("250 2.0.0 Ok: queued as {id:X}\r\n").as_bytes());
                let lane = f.next_lane.fetch_add(1, Ordering::Relaxed) % f.lanes.len();
                let msg = Accepted { id, from: std::mem::take(&mut from), to: std::mem::take(&mut to), body };
                f.lanes[lane].send(msg).context("delivery gone")?;
                continue;
            }
            let Some(nl) = memchr::memchr(b'\n', rest) else { break };
            let line = &rest[..=nl];
            start += nl + 1;
            let verb = line.get(..4).map(|v| v.to_ascii_uppercase()).unwrap_or_default();
            match &verb[..] {
                b"EHLO" => out.extend_from_slice(b"250-floor.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"),
                b"MAIL" => {
                    from = angle(line);
                    out.extend_from_slice(b"250 2.1.0 Ok\r\n");
                }
                b"RCPT" => {
                    to = angle(line);
                    out.extend_from_slice(b"250 2.1.5 Ok\r\n");
                }
                b"DATA" => {
                    in_data = true;
                    out.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                }
                b"QUIT" => {
                    out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                    s.write_all(&out).await?;
                    return Ok(());
                }
                _ => out.extend_from_slice(b"250 2.0.0 Ok\r\n"),
            }
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        input.drain(..start);
        if s.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
    }
}

/// Reads until N final reply lines (`ddd ` rather than `ddd-`) have come,
/// and fails on any that is not 2xx or 3xx.
async fn replies(s: &mut TcpStream, buf: &mut Vec<u8>, mut n: usize) -> anyhow::Result<()> {
    while n > 0 {
        while let Some(nl) = memchr::memchr(b'\n', buf) {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            if line.len() < 4 || !matches!(line[0], b'2' | b'3') {
                bail!("LMTP sink answered {}", String::from_utf8_lossy(&line).trim_end());
            }
            if line[3] == b' ' {
                n -= 1;
                if n == 0 {
                    return Ok(());
                }
            }
        }
        if s.read_buf(buf).await? == 0 {
            bail!("LMTP sink closed the connection");
        }
    }
    Ok(())
}

/// One kept LMTP connection: each message's commands in one write, its body
/// and the final dot in another, then the removal record, synced.
async fn deliver_loop(
    port: u16,
    mut queue: mpsc::UnboundedReceiver<Accepted>,
    f: &Floor,
) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    replies(&mut s, &mut buf, 1).await?;
    s.write_all(b"LHLO floor.test\r\n").await?;
    replies(&mut s, &mut buf, 1).await?;
    while let Some(mut m) = queue.recv().await {
        let commands = format!("MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n", m.from, m.to);
        s.write_all(commands.as_bytes()).await?;
        replies(&mut s, &mut buf, 3).await?;
        m.body.extend_from_slice(b".\r\n");
        s.write_all(&m.body).await?;
        replies(&mut s, &mut buf, 1).await?;
        f.log(format!("{:X}: to=<{}>, relay=sink, status=sent (250 Ok)", m.id, m.to));
        if !f.no_removal {
            f.append(format!("removed {:X}\n", m.id).into_bytes()).await?;
        }
        f.log(format!("{:X}: removed", m.id));
    }
    Ok(())
}
