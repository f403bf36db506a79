//! The accept loop: binds the listening socket with a backlog large enough
//! for bursts, takes a session permit before `accept`, reads the PROXY
//! header first behind a load balancer (`smtpd_upstream_proxy_protocol`,
//! so the limits count the real client; only from the load balancers of
//! `sluice_upstream_proxy_networks`), applies the per-client limits of
//! [`Inbound`] and starts one [`Session`] per connection. Never parses
//! SMTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use super::events::{self, Event};
use super::inbound::Inbound;
use super::peer::Peer;
use super::proxy;
use super::session::Session;
use super::settings::Settings;
use crate::clock;
use crate::reply::{Reply, Status};
use crate::shutdown::Stage;

/// Binds an SMTP listening socket with room in its accept queue for
/// `backlog` connections (the kernel caps it at `net.core.somaxconn`).
///
/// Use this rather than `TcpListener::bind`, whose backlog is 128: in a
/// burst beyond the backlog the kernel answers with SYN cookies and then
/// drops the client's ACK, so the client believes it is connected while the
/// server never sees the connection. The client, waiting for the server to
/// speak first, then hangs until its own timeout (measured here: 1,000
/// simultaneous connects left 554 such ghosts with a backlog of 128).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accepts connections on `listener` until `stage` is cancelled, running
/// one session task per connection. Each session holds a guard of `stage`,
/// so `stage.stop()` returns once every session has finished (a session in
/// DATA finishes its message and commit first, then answers `421`).
pub async fn serve(listener: TcpListener, inbound: Arc<Inbound>, stage: Stage) {
    serve_staged(listener, inbound, stage.clone(), stage).await
}

/// Like [`serve`], with the accept loop and the sessions in separate
/// shutdown stages, so the daemon can stop accepting first and give
/// sessions a grace period before they are told `421`.
pub async fn serve_staged(listener: TcpListener, inbound: Arc<Inbound>, accept: Stage, stage: Stage) {
    let _guard = accept.guard();
    let local = listener.local_addr().ok();
    loop {
        // The permit comes first: when the listener is full, clients wait in
        // the backlog instead of being accepted and turned away.
        let permit = tokio::select! {
            biased;
            _ = accept.cancelled() => break,
            p = Arc::clone(inbound.sessions()).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = accept.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!("accept on {}: {e}", local.map_or_else(|| "listener".to_owned(), |a| a.to_string()));
                    tokio::select! {
                        _ = accept.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let base = inbound.settings();
        if base.upstream_proxy && !base.upstream_proxy_networks.contains(peer.ip()) {
            // Only a trusted load balancer may name the client: anyone else
            // reaching the port directly could claim an address in
            // mynetworks and relay. Nothing is read or sent: the peer is
            // not a load balancer, and an SMTP reply would invite it on.
            warn!(
                "connection from [{}]:{} refused: not in sluice_upstream_proxy_networks",
                peer.ip(),
                peer.port()
            );
            events::emit(Event::ConnectionRefused);
            drop((stream, permit));
            continue;
        }
        // Its settings: under stress when it took the last free slot.
        let local_name = local.map_or_else(|| "listener".to_owned(), |a| a.to_string());
        let settings = inbound.session_settings(&local_name, clock::instant());
        if settings.upstream_proxy {
            // The header comes first, in the session's own task: a slow
            // load balancer holds up no other connection.
            let guard = stage.guard();
            let (inbound, stage) = (Arc::clone(&inbound), stage.clone());
            tokio::spawn(async move {
                let mut stream = stream;
                match proxy::read_header(&mut stream, peer, settings.upstream_proxy_timeout).await {
                    Ok((client, early)) => {
                        start(stream, client, early, inbound, settings, stage).await;
                    }
                    Err(e) => warn!("{e} from [{}]:{}", peer.ip(), peer.port()),
                }
                drop((permit, guard));
            });
            continue;
        }
        let guard = stage.guard();
        let (inbound, stage) = (Arc::clone(&inbound), stage.clone());
        tokio::spawn(async move {
            start(stream, peer, BytesMut::new(), inbound, settings, stage).await;
            drop((permit, guard));
        });
    }
    match local {
        Some(addr) => info!("stopped accepting on {addr}"),
        None => info!("stopped accepting"),
    }
}

/// Admits a connection from `client` against the per-client limits and
/// runs its session (`early`: bytes already read from it), or refuses it.
async fn start(
    stream: TcpStream,
    client: SocketAddr,
    early: BytesMut,
    inbound: Arc<Inbound>,
    settings: Arc<Settings>,
    stage: Stage,
) {
    match inbound.admit(client.ip(), &settings) {
        Ok(slot) => {
            let mut peer = Peer::new(client);
            peer.local = stream.local_addr().ok();
            Session::new(stream, peer, inbound, settings, stage).with_input(early).run().await;
            drop(slot);
        }
        Err(why) => {
            warn!("{why} for service smtp");
            events::emit(Event::ConnectionRefused);
            refuse(stream, client, &settings).await;
        }
    }
}

/// Runs one session over an already-connected stream, without the
/// listener's limits: for tests and for callers with their own transport.
pub async fn serve_stream<S>(stream: S, peer: SocketAddr, inbound: Arc<Inbound>, stage: Stage)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let _guard = stage.guard();
    let settings = inbound.settings();
    Session::new(stream, Peer::new(peer), inbound, settings, stage).run().await;
}

/// Tells a client over a per-client limit to come back later, and closes.
async fn refuse(mut stream: TcpStream, peer: SocketAddr, settings: &Settings) {
    let reply = Reply::new(
        421,
        Status(4, 7, 0),
        format!("{} Error: too many connections from {}", settings.myhostname, peer.ip()),
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        stream.write_all(&reply.to_wire()).await?;
        stream.shutdown().await
    })
    .await;
}
