//! The client side of Postfix's SMTPD policy delegation protocol
//! (`check_policy_service`): `name=value` lines and an empty line out, an
//! `action=...` line and an empty line back, over TCP or a unix socket.
//! Servers written for Postfix (policyd-spf, postgrey, ...) answer it.
//!
//! Owns the wire exchange and its bounds (one request per connection,
//! `smtpd_policy_service_timeout` for all of it, a bounded answer). What
//! the action means is the policy's [`super::policy`] business; a server
//! that cannot be asked gets `smtpd_policy_service_default_action`.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tracing::warn;

use crate::config::{PolicyEndpoint, PolicyService};

/// The longest answer read from a policy server.
const MAX_ANSWER: usize = 8 * 1024;

/// Asks `service` about a request described by `attributes`; the
/// `action=` value, or `default_action` (logged) when the server cannot be
/// reached, is too slow or answers nonsense.
pub async fn ask(
    service: &PolicyService,
    attributes: &[(&str, String)],
    timeout: Duration,
    default_action: &str,
) -> String {
    match tokio::time::timeout(timeout, exchange(service, attributes)).await {
        Ok(Ok(action)) => action,
        Ok(Err(e)) => {
            warn!("problem talking to server {}: {e}", service.name);
            default_action.to_owned()
        }
        Err(_) => {
            warn!("timeout talking to server {} after {timeout:?}", service.name);
            default_action.to_owned()
        }
    }
}

async fn exchange(service: &PolicyService, attributes: &[(&str, String)]) -> std::io::Result<String> {
    let mut request = String::new();
    for (name, value) in attributes {
        // A value never spans lines: the protocol has no escaping.
        let value: String = value.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
        request.push_str(&format!("{name}={value}\n"));
    }
    request.push('\n');
    match &service.endpoint {
        PolicyEndpoint::Inet { host, port } => {
            talk(tokio::net::TcpStream::connect((host.as_str(), *port)).await?, &request).await
        }
        PolicyEndpoint::Unix(path) => talk(tokio::net::UnixStream::connect(path).await?, &request).await,
    }
}

async fn talk<S: AsyncRead + AsyncWrite + Unpin>(stream: S, request: &str) -> std::io::Result<String> {
    let mut stream = BufReader::new(stream);
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut action = None;
    let mut read = 0;
    loop {
        let mut line = String::new();
        let n = (&mut stream).take((MAX_ANSWER - read) as u64).read_line(&mut line).await?;
        read += n;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if read >= MAX_ANSWER {
            return Err(std::io::Error::other("answer too long"));
        }
        if let Some(a) = line.strip_prefix("action=") {
            action = Some(a.to_owned());
        }
    }
    action.ok_or_else(|| std::io::Error::other("answer without action="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_request_one_action_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            while !got.ends_with(b"\n\n") {
                let mut b = [0u8; 256];
                let n = s.read(&mut b).await.unwrap();
                got.extend_from_slice(&b[..n]);
            }
            s.write_all(b"action=DEFER_IF_PERMIT Greylisted\n\n").await.unwrap();
            String::from_utf8(got).unwrap()
        });
        let svc = PolicyService::parse(&format!("unix:{}", path.display())).unwrap();
        let attrs = [("request", "smtpd_access_policy".to_owned()), ("sender", "a\r\nb@x".to_owned())];
        let action = ask(&svc, &attrs, Duration::from_secs(5), "DUNNO").await;
        assert_eq!(action, "DEFER_IF_PERMIT Greylisted");
        assert_eq!(server.await.unwrap(), "request=smtpd_access_policy\nsender=a  b@x\n\n");
    }

    #[tokio::test]
    async fn an_unreachable_server_gets_the_default_action() {
        let svc = PolicyService::parse("unix:/nonexistent/policy").unwrap();
        let action = ask(&svc, &[], Duration::from_secs(5), "451 4.3.5 Server configuration problem").await;
        assert_eq!(action, "451 4.3.5 Server configuration problem");
    }
}
