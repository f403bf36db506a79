//! The virtual alias stage of `RCPT TO`: an accepted recipient is expanded
//! through `virtual_alias_maps` (`config::Config::expand_virtual_alias`)
//! before it is stored, so the envelope holds the targets, each with the
//! address the client named (`original`, logged as `orig_to=`) and, when
//! the client gave no `ORCPT`, that address as its ORCPT (Postfix's
//! cleanup does the same), so DSNs carry `Original-Recipient:`.
//!
//! Postfix expands in cleanup, after the `RCPT` was answered; sluice
//! expands here so a failure is told to the client while it is connected
//! (`451`), and the message is never half-accepted. The targets are not
//! checked against the RCPT restrictions again (Postfix's smtpd never sees
//! them either): each is routed at delivery (transport_maps), as any
//! recipient. Unknown addresses in `virtual_alias_domains` are refused by
//! the policy (`reject_unlisted_recipient`), before this stage.
//!
//! `reject_unverified_recipient` probes an alias's targets, not the alias
//! ([`Session::verify_targets`]), as Postfix's probes go through cleanup.
//!
//! Never decides relay or recipient validity; never stores anything.

use sluice_queue::Recipient;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;

use super::mail::xtext;
use super::policy::Answers;
use super::session::Session;
use crate::config::{AliasError, Known};
use crate::reply::{Reply, Status};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// The addresses `reject_unverified_recipient` probes for `address`:
    /// its first `sluice_address_verify_alias_targets` alias targets (a
    /// larger expansion is a list: probing each member at every new RCPT
    /// would load the mailbox servers the probes are meant to spare), or
    /// itself when it is no alias or its expansion fails (the expansion's
    /// own failure is answered when the recipient is stored).
    pub(super) async fn verify_targets(&self, address: &str, known: &mut Known) -> Vec<String> {
        let Some(config) = &self.settings.aliases else { return vec![address.to_owned()] };
        match config.expand_virtual_alias(address, known).await {
            Ok(Some(mut targets)) => {
                let most = config.int("sluice_address_verify_alias_targets").max(1);
                targets.truncate(usize::try_from(most).unwrap_or(usize::MAX));
                targets
            }
            _ => vec![address.to_owned()],
        }
    }

    /// The recipients an accepted `rcpt` stands for: itself when it is no
    /// alias (or maps only to itself), else its expansion, in order, each
    /// once. Directory answers gathered by the restrictions are reused
    /// (`answers`), and what the expansion asks is added to them.
    ///
    /// A failure is a `451` (the client retries; nothing was stored): a
    /// table that fails says `4.3.0` as the restrictions do, the limits
    /// say Postfix's `4.6.0 Alias expansion error`; each is logged as
    /// Postfix's cleanup logs it.
    pub(super) async fn expand_alias(
        &self,
        rcpt: Recipient,
        answers: &mut Answers,
    ) -> Result<Vec<Recipient>, Reply> {
        let Some(config) = &self.settings.aliases else { return Ok(vec![rcpt]) };
        let targets = match config.expand_virtual_alias(&rcpt.address, &mut answers.tables).await {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(vec![rcpt]),
            Err(AliasError::Lookup(e)) => {
                warn!(
                    "{}: virtual_alias_maps map lookup problem for {} -- message not accepted, try again later ({e})",
                    self.queue_id(),
                    rcpt.address
                );
                return Err(Reply::new(
                    451,
                    Status(4, 3, 0),
                    format!("<{}>: Temporary lookup failure", rcpt.address),
                ));
            }
            Err(e) => {
                warn!(
                    "{}: {e} for {} -- message not accepted, try again later",
                    self.queue_id(),
                    rcpt.address
                );
                return Err(Reply::new(451, Status(4, 6, 0), "Alias expansion error"));
            }
        };
        if let [only] = targets.as_slice()
            && only.eq_ignore_ascii_case(&rcpt.address)
        {
            return Ok(vec![rcpt]);
        }
        let orcpt = rcpt.orcpt.clone().unwrap_or_else(|| format!("rfc822;{}", xtext(&rcpt.address)));
        Ok(targets
            .into_iter()
            .map(|address| {
                let mut r = rcpt.clone();
                r.address = address;
                r.original = Some(rcpt.address.clone());
                r.orcpt = Some(orcpt.clone());
                r
            })
            .collect())
    }
}
