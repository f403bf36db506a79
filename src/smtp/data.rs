//! The `DATA` stage: the command (its refusals and `smtpd_data_restrictions`,
//! then `354`) and the content that follows it up to the end-of-data line.
//! The bytes are decoded by [`super::content`]; the message they make is
//! begun, fed and committed by `message.rs`, shared with `BDAT`.

use sluice_queue::BodyType;
use tokio::io::{AsyncRead, AsyncWrite};

use super::content::Decoder;
use super::session::Session;
use super::state::{Flow, Input, MilterVerdict, Transaction};
use crate::clock;
use crate::reply::{Reply, Status};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `DATA`: answers `354` and switches the input to message content.
    pub(super) async fn data(&mut self) -> Flow {
        let refusal = match &self.tx {
            Transaction::Idle => Some(Reply::new(503, Status(5, 5, 1), "Error: need RCPT command")),
            Transaction::Mail(m) if m.rcpts.is_empty() => {
                Some(Reply::new(554, Status(5, 5, 1), "Error: no valid recipients"))
            }
            Transaction::Mail(m) if m.body.is_some() => {
                Some(Reply::new(503, Status(5, 5, 1), "Error: DATA after BDAT"))
            }
            // RFC 3030 3: binary content can only travel in BDAT chunks.
            Transaction::Mail(m) if m.body_type == BodyType::BinaryMime => {
                Some(Reply::new(503, Status(5, 5, 1), "Error: BODY=BINARYMIME requires BDAT"))
            }
            Transaction::Mail(_) => match self.data_refusal().await {
                Some(r) => Some(r),
                None => match self.milter_data().await {
                    MilterVerdict::Go => None,
                    // Logged as a milter decision already.
                    MilterVerdict::Refuse(r) => {
                        self.counts.add("data", false);
                        self.reply(&r);
                        return Flow::Continue;
                    }
                    MilterVerdict::Close(r) => {
                        self.counts.add("data", false);
                        self.reply(&r);
                        return Flow::Close;
                    }
                },
            },
        };
        if let Some(r) = refusal {
            self.counts.add("data", false);
            if r.code() != 503 {
                self.log_reject("DATA", &r, None);
            }
            self.reply(&r);
            return Flow::Continue;
        }
        let decoder = Decoder::data(self.mode, self.settings.data_line_limit);
        self.begin_body(decoder).await;
        self.input = Input::Data;
        self.reply(&Reply::multiline(354, None, vec!["End data with <CR><LF>.<CR><LF>".to_owned()]));
        Flow::Continue
    }

    /// Feeds buffered content to the decoder; at the end of data, commits
    /// and answers.
    pub(super) async fn data_input(&mut self) -> Flow {
        if self.rbuf.is_empty() {
            return Flow::NeedInput;
        }
        let n = self.rbuf.len();
        self.feed_body(n).await;
        let done = match &self.tx {
            Transaction::Mail(m) => m.body.as_ref().is_none_or(|b| b.decoder.is_done()),
            Transaction::Idle => true,
        };
        if !done {
            return Flow::NeedInput;
        }
        self.last = "END-OF-MESSAGE";
        let queued = self.finish_message().await;
        self.counts.add("data", queued);
        self.input = Input::Command;
        self.restart_request(clock::instant());
        if self.closing { Flow::Close } else { Flow::Continue }
    }
}
