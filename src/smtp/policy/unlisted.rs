//! Which destinations are this host's and which of their addresses
//! exist: relay authorization (`reject_unauth_destination` and friends:
//! `relay_domains` and `virtual_alias_domains`) and the
//! `reject_unlisted_recipient` verdict (`virtual_alias_maps`, then
//! `virtual_alias_domains`, then `relay_recipient_maps`, as Postfix's
//! check_rcpt_maps). Pure, as the rest of the policy: the tables are
//! asked through [`super::Lookups`].

use super::{Policy, reply_class};
use crate::config::{Known, LookupError};
use crate::reply::{Reply, Status};

impl Policy {
    /// True when sluice relays for the recipient's domain: one of
    /// `relay_domains`, and no sender-specified routing in the local part
    /// (`user%other@domain`, `user!other@domain`), which a downstream
    /// server might honour and so turn us into an open relay.
    pub(super) fn authorized(&self, rcpt: &str, known: &Known) -> Result<bool, LookupError> {
        let Some((local, domain)) = rcpt.rsplit_once('@') else { return Ok(false) };
        if domain.is_empty() || local.contains(['%', '!', '@']) {
            return Ok(false);
        }
        // Postfix's permit_auth_destination: virtual alias domains are
        // destinations of this host as relay_domains are.
        Ok(self.lookups.is_relay_domain(domain, known)?
            || self.lookups.virtual_alias_domain(domain, known)?.is_some())
    }

    /// The `reject_unlisted_recipient` verdict: a reply when the address is
    /// in a relay domain and `relay_recipient_maps` does not list it, or in
    /// a virtual alias domain and is no alias. As Postfix's
    /// check_rcpt_maps, an address `virtual_alias_maps` lists is known
    /// whatever its domain (its targets are checked by routing, not here).
    pub(super) fn unlisted(&self, rcpt: &str, known: &Known) -> Result<Option<Reply>, LookupError> {
        let Some((_, domain)) = rcpt.rsplit_once('@') else { return Ok(None) };
        if self.lookups.is_virtual_alias(rcpt, known)? {
            return Ok(None);
        }
        if let Some(code) = self.lookups.virtual_alias_domain(domain, known)? {
            return Ok(Some(Reply::new(
                code,
                Status(reply_class(code), 1, 1),
                format!("<{rcpt}>: Recipient address rejected: User unknown in virtual alias table"),
            )));
        }
        if !self.lookups.is_relay_domain(domain, known)? {
            return Ok(None);
        }
        Ok(match self.lookups.relay_recipient(rcpt, known)? {
            Some(false) => Some(Reply::new(
                550,
                Status(5, 1, 1),
                format!("<{rcpt}>: Recipient address rejected: User unknown in relay recipient table"),
            )),
            _ => None,
        })
    }
}
