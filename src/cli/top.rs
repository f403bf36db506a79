//! `sluice top`: the live view of a running daemon for the person on call.
//!
//! Each refresh is one admin request ([`Request::Top`]) whose answer holds
//! everything the screen shows; the daemon keeps the history the
//! sparklines draw (see `server::admin::top`). Keys pause and resume the
//! selected backend and flush its mail (or all mail), each after a `y` to
//! a question on the bottom line. When stdout is not a terminal, or with
//! `--once`, it prints one plain-text frame and exits (for tickets, cron
//! mails and scripts).
//!
//! Never changes anything without the confirmation; never talks to the
//! queue directly (it needs the daemon).

mod draw;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::Rect;

use super::args::TopArgs;
use crate::clock;
use crate::config::Config;
use crate::server::admin::api::{Request, Response};
use crate::server::admin::socket;
use crate::server::admin::top::TopFrame;
use crate::server::admin_socket;

pub use draw::{Chrome, render, to_text};

/// History points asked for: wider than any terminal's sparkline.
const POINTS: u32 = 300;
/// How long a request may take before the view says so.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const KEYS: &str = "↑↓ select  p pause  r resume  f flush backend  F flush all  q quit";

/// Runs `sluice top`.
pub fn run(config_dir: &Path, args: &TopArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load(config_dir) {
        Ok(loaded) => loaded.config,
        Err(errors) => bail!("{errors}"),
    };
    let path = admin_socket(&config);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let call = |req: Request| -> anyhow::Result<Response> {
        let resp = rt.block_on(socket::call(&path, &req, CALL_TIMEOUT))?;
        Ok(resp)
    };
    let fetch = || -> anyhow::Result<TopFrame> {
        let resp = call(Request::Top { points: POINTS })?;
        if !resp.ok {
            bail!("{}", resp.text);
        }
        serde_json::from_value(resp.data).context("reading the daemon's answer")
    };
    if args.once || !std::io::stdout().is_terminal() {
        let frame = fetch()?;
        print!("{}", text_frame(&frame, args.width));
        return Ok(ExitCode::SUCCESS);
    }
    let first = fetch()?;
    let mut terminal = ratatui::init();
    let result = live(&mut terminal, first, args.interval, &fetch, &call);
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}

/// One frame as plain text, `width` columns wide and as tall as it needs.
/// It is widened to show backend names whole: a script matches them.
pub fn text_frame(frame: &TopFrame, width: u16) -> String {
    let longest = frame.backends.iter().map(|b| b.view.name.chars().count()).max().unwrap_or(0);
    let width = width.max(60 + longest as u16);
    let area = Rect::new(0, 0, width, draw::full_height(frame));
    let mut buf = Buffer::empty(area);
    render(frame, &Chrome::default(), area, &mut buf);
    to_text(&buf)
}

/// A command waiting for its `y`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Pause(String),
    Resume(String),
    Flush(Option<String>),
}

impl Pending {
    fn question(&self) -> String {
        match self {
            Pending::Pause(b) => format!("Pause {b} (its mail waits in the queue)? y/n"),
            Pending::Resume(b) => format!("Resume {b}? y/n"),
            Pending::Flush(Some(b)) => format!("Flush the mail for {b} now? y/n"),
            Pending::Flush(None) => "Flush ALL deferred mail now? y/n".into(),
        }
    }

    fn request(&self) -> Request {
        match self.clone() {
            Pending::Pause(name) => Request::BackendPause { name, until: None, local: false },
            Pending::Resume(name) => Request::BackendResume { name, local: false },
            Pending::Flush(backend) => Request::QueueFlush { backend, domain: None },
        }
    }
}

/// The viewer's state between refreshes.
#[derive(Debug, Default)]
struct Viewer {
    selected: usize,
    pending: Option<Pending>,
    /// The answer to the last command, shown until the next key.
    message: Option<String>,
}

/// What a key asks for.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Stay,
    Quit,
    Send(Request),
}

impl Viewer {
    fn chrome(&self) -> Chrome {
        let footer = match (&self.pending, &self.message) {
            (Some(p), _) => p.question(),
            (None, Some(m)) => m.clone(),
            (None, None) => KEYS.to_owned(),
        };
        Chrome { selected: self.selected, footer: Some(footer) }
    }

    /// Handles one key against the frame on screen.
    fn key(&mut self, code: KeyCode, frame: &TopFrame) -> Step {
        self.message = None;
        if let Some(p) = self.pending.take() {
            return match code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Step::Send(p.request()),
                _ => {
                    self.message = Some("cancelled".into());
                    Step::Stay
                }
            };
        }
        let n = frame.backends.len();
        let name = frame.backends.get(self.selected).map(|b| b.view.name.clone());
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return Step::Quit,
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(n.saturating_sub(1))
            }
            KeyCode::Char('p') => self.pending = name.map(Pending::Pause),
            KeyCode::Char('r') => self.pending = name.map(Pending::Resume),
            KeyCode::Char('f') => self.pending = name.map(|b| Pending::Flush(Some(b))),
            KeyCode::Char('F') => self.pending = Some(Pending::Flush(None)),
            _ => {}
        }
        Step::Stay
    }
}

fn live(
    terminal: &mut ratatui::DefaultTerminal,
    mut frame: TopFrame,
    interval: Duration,
    fetch: &dyn Fn() -> anyhow::Result<TopFrame>,
    call: &dyn Fn(Request) -> anyhow::Result<Response>,
) -> anyhow::Result<()> {
    let mut viewer = Viewer::default();
    let mut next = clock::instant() + interval;
    loop {
        viewer.selected = viewer.selected.min(frame.backends.len().saturating_sub(1));
        let chrome = viewer.chrome();
        terminal.draw(|f| render(&frame, &chrome, f.area(), f.buffer_mut()))?;
        let wait = next.saturating_duration_since(clock::instant());
        if event::poll(wait)? {
            if let Event::Key(k) = event::read()?
                && k.kind == KeyEventKind::Press
            {
                if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
                    return Ok(());
                }
                match viewer.key(k.code, &frame) {
                    Step::Quit => return Ok(()),
                    Step::Stay => continue,
                    Step::Send(req) => {
                        viewer.message = Some(match call(req) {
                            Ok(r) => r.text.lines().next().unwrap_or("done").to_owned(),
                            Err(e) => format!("failed: {e}"),
                        });
                        next = clock::instant();
                    }
                }
            }
            continue;
        }
        match fetch() {
            Ok(f) => frame = f,
            Err(e) => viewer.message = Some(format!("cannot refresh: {e}")),
        }
        next = clock::instant() + interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::admin::top::TopFrame;

    fn frame() -> TopFrame {
        draw::tests::sample_frame()
    }

    #[test]
    fn pause_asks_first_and_sends_only_after_y() {
        let f = frame();
        let mut v = Viewer::default();
        assert_eq!(v.key(KeyCode::Down, &f), Step::Stay);
        assert_eq!(v.key(KeyCode::Char('p'), &f), Step::Stay);
        let name = f.backends[1].view.name.clone();
        assert!(v.chrome().footer.unwrap().starts_with(&format!("Pause {name}")));
        assert_eq!(
            v.key(KeyCode::Char('y'), &f),
            Step::Send(Request::BackendPause { name, until: None, local: false })
        );
    }

    #[test]
    fn any_other_key_cancels_a_question() {
        let f = frame();
        let mut v = Viewer::default();
        v.key(KeyCode::Char('F'), &f);
        assert_eq!(v.chrome().footer.unwrap(), "Flush ALL deferred mail now? y/n");
        assert_eq!(v.key(KeyCode::Char('n'), &f), Step::Stay);
        assert_eq!(v.chrome().footer.unwrap(), "cancelled");
        assert_eq!(v.key(KeyCode::Char('f'), &f), Step::Stay);
        let name = f.backends[0].view.name.clone();
        assert_eq!(
            v.key(KeyCode::Char('y'), &f),
            Step::Send(Request::QueueFlush { backend: Some(name), domain: None })
        );
        assert_eq!(v.key(KeyCode::Char('q'), &f), Step::Quit);
    }

    #[test]
    fn selection_stays_within_the_backends() {
        let f = frame();
        let mut v = Viewer::default();
        for _ in 0..10 {
            v.key(KeyCode::Down, &f);
        }
        assert_eq!(v.selected, f.backends.len() - 1);
        v.key(KeyCode::Up, &f);
        assert_eq!(v.selected, f.backends.len() - 2);
    }
}
