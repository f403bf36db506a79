//! The admin socket: a Unix domain socket under the queue directory, owner
//! only (mode 0600), carrying one JSON [`Request`] per line and one JSON
//! [`Response`] per line back.
//!
//! Owner-only permissions are the access control: whoever can write to the
//! socket can delete mail.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::api::{Handler, Request, Response};
use crate::shutdown::Stage;

/// Longest request line accepted (IDs for thousands of messages fit).
const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Nothing listens on the socket: the daemon is not running.
    #[error("sluice is not running (no daemon on {0})")]
    NotRunning(PathBuf),
    #[error("admin socket {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("admin socket {0}: malformed answer")]
    Protocol(PathBuf),
    #[error("admin socket {0}: no answer within the timeout")]
    Timeout(PathBuf),
}

/// Binds the admin socket at `path` with mode 0600. A stale socket file
/// left by a crashed daemon is replaced; a live one is an error (another
/// daemon owns this queue).
pub async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{}: another sluice daemon is answering on it", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves admin requests until the stage is cancelled; removes the socket
/// file on the way out.
pub async fn serve(listener: UnixListener, path: PathBuf, handler: Handler, stage: Stage) {
    let _guard = stage.guard();
    loop {
        tokio::select! {
            _ = stage.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, handler).await {
                            tracing::debug!(target: "admin", "admin connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(target: "admin", "admin socket accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn connection(stream: UnixStream, handler: Handler) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd).take(MAX_REQUEST as u64);
    let mut line = String::new();
    loop {
        line.clear();
        if rd.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let resp = match serde_json::from_str::<Request>(line.trim_end()) {
            Ok(req) => handler.handle(req).await,
            Err(e) => Response::error(format!("malformed request: {e}")),
        };
        let mut out = serde_json::to_vec(&resp).unwrap_or_default();
        out.push(b'\n');
        wr.write_all(&out).await?;
    }
}

use tokio::io::AsyncReadExt as _;

/// Sends one request to the daemon and returns its answer.
pub async fn call(path: &Path, req: &Request, timeout: Duration) -> Result<Response, SocketError> {
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            return Err(SocketError::NotRunning(path.to_owned()));
        }
        Err(e) => return Err(SocketError::Io { path: path.to_owned(), source: e }),
    };
    let io = |e| SocketError::Io { path: path.to_owned(), source: e };
    let exchange = async {
        let (rd, mut wr) = stream.into_split();
        let mut line = serde_json::to_vec(req).map_err(|_| SocketError::Protocol(path.to_owned()))?;
        line.push(b'\n');
        wr.write_all(&line).await.map_err(io)?;
        let mut rd = BufReader::new(rd);
        let mut answer = String::new();
        rd.read_line(&mut answer).await.map_err(io)?;
        serde_json::from_str::<Response>(answer.trim_end())
            .map_err(|_| SocketError::Protocol(path.to_owned()))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| SocketError::Timeout(path.to_owned()))?
}
