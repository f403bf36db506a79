//! The `BDAT` stage (RFC 3030 CHUNKING, and BINARYMIME): length-delimited
//! chunks, so no dot-unstuffing and no end-of-data search; the chunk after
//! `BDAT n LAST` ends the message.
//!
//! A chunk is always read to its end, even when it will be refused (no
//! transaction, no recipients, too big), because its bytes are not
//! commands. A refused chunk ends the transaction, as RFC 3030 4.2 expects
//! of a client that got an error for one.

use tokio::io::{AsyncRead, AsyncWrite};

use super::content::Decoder;
use super::session::Session;
use super::state::{Flow, Input, MilterVerdict, Transaction};
use crate::clock;
use crate::reply::{Reply, Status};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `BDAT size [LAST]`: sets up reading the chunk.
    pub(super) async fn bdat(&mut self, size: u64, last: bool) -> Flow {
        let limit = self.settings.message_size_limit;
        let refusal = match &self.tx {
            // smtpd_discard_ehlo_keywords took CHUNKING away.
            _ if !self.settings.offers("chunking") => {
                Some(Reply::new(502, Status(5, 5, 1), "Error: command not implemented"))
            }
            Transaction::Idle => Some(Reply::new(503, Status(5, 5, 1), "Error: need MAIL command")),
            Transaction::Mail(m) if m.rcpts.is_empty() => {
                Some(Reply::new(554, Status(5, 5, 1), "Error: no valid recipients"))
            }
            Transaction::Mail(m) => {
                let so_far = m.body.as_ref().map_or(0, |b| b.size);
                if limit > 0 && so_far.saturating_add(size) > limit {
                    Some(Reply::new(552, Status(5, 3, 4), "Error: message file too big"))
                } else if m.body.is_none() {
                    match self.data_refusal().await {
                        Some(r) => Some(r),
                        None => match self.milter_data().await {
                            MilterVerdict::Go => None,
                            MilterVerdict::Refuse(r) => Some(r),
                            MilterVerdict::Close(r) => {
                                self.counts.add("bdat", false);
                                self.reply(&r);
                                return Flow::Close;
                            }
                        },
                    }
                } else {
                    None
                }
            }
        };
        self.xfer_started = clock::instant();
        self.xfer_bytes = 0;
        if let Some(r) = refusal {
            self.counts.add("bdat", false);
            if r.code() != 503 {
                self.log_reject("BDAT", &r, None);
            }
            // The refusal ends the transaction; the reply waits for the chunk.
            self.reset().await;
            self.input = Input::Discard { left: size, reply: r };
            return Flow::Continue;
        }
        let needs_body = matches!(&self.tx, Transaction::Mail(m) if m.body.is_none());
        if needs_body {
            // BINARYMIME too: see `Decoder` for why.
            self.begin_body(Decoder::bdat(self.mode)).await;
            self.xfer_started = clock::instant();
        }
        self.input = Input::Bdat { left: size, last };
        Flow::Continue
    }

    /// Feeds buffered chunk bytes; at the chunk's end, answers it (and for
    /// the last one, commits the message).
    pub(super) async fn bdat_input(&mut self) -> Flow {
        let Input::Bdat { left, last } = self.input else { return Flow::Continue };
        if left > 0 {
            if self.rbuf.is_empty() {
                return Flow::NeedInput;
            }
            let n = self.rbuf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let used = self.feed_body(n).await as u64;
            let left = left - used.min(left);
            self.input = Input::Bdat { left, last };
            if left > 0 {
                return Flow::NeedInput;
            }
        }
        self.input = Input::Command;
        self.restart_request(clock::instant());
        let failed = match &mut self.tx {
            Transaction::Mail(m) => match m.body.as_mut() {
                Some(b) => {
                    if last {
                        b.decoder.finish(&mut b.out);
                    }
                    b.decoder.violation().is_some() || b.storage.is_some()
                }
                None => true,
            },
            Transaction::Idle => true,
        };
        if last || failed {
            // The commit, or the refusal of the whole message.
            self.last = "BDAT";
            let queued = self.finish_message().await;
            self.counts.add("bdat", queued);
            if self.closing {
                return Flow::Close;
            }
        } else {
            self.counts.add("bdat", true);
            let size = match &self.tx {
                Transaction::Mail(m) => m.body.as_ref().map_or(0, |b| b.size),
                Transaction::Idle => 0,
            };
            self.reply(&Reply::new(250, Status(2, 0, 0), format!("Ok: {size} bytes")));
        }
        Flow::Continue
    }

    /// Reads and drops a refused chunk, then sends its reply.
    pub(super) fn discard_input(&mut self) -> Flow {
        let Input::Discard { left, .. } = &mut self.input else { return Flow::Continue };
        let n = self.rbuf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
        let _ = self.rbuf.split_to(n);
        *left -= n as u64;
        self.xfer_bytes += n as u64;
        if *left > 0 {
            return Flow::NeedInput;
        }
        let Input::Discard { reply, .. } = std::mem::replace(&mut self.input, Input::Command) else {
            return Flow::Continue;
        };
        self.restart_request(clock::instant());
        self.reply(&reply);
        Flow::Continue
    }
}
