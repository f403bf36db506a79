//! How one [`TopFrame`] is laid out on a screen: the same drawing for the
//! live terminal (ratatui over crossterm) and for the plain-text frame
//! printed when stdout is not a terminal, so a capture in a ticket looks
//! like what the person on call saw.
//!
//! Pure: a frame and the viewer's state in, cells of a ratatui `Buffer`
//! out. Fits 80×24 (an SSH session's default); what does not fit is cut
//! from the bottom of each list, biggest rows first.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline, Widget};
use sluice_queue::UnixMillis;

use crate::server::admin::api::BackendView;
use crate::server::admin::top::{BackendRow, TopFrame};

/// What the viewer adds to the daemon's frame.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    /// The selected backend (index into the frame's backends).
    pub selected: usize,
    /// The bottom line: key help, a question awaiting `y`, or the result
    /// of the last command. `None` in the plain-text frame.
    pub footer: Option<String>,
}

/// Rows every frame has: header, inbound (2), queue, backend header,
/// backend detail (4), shape header, fleet, footer.
const FIXED_ROWS: u16 = 12;

const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);
const DIM: Style = Style::new().fg(Color::DarkGray);

/// Rows the frame needs to show every backend and every shape row (the
/// plain-text frame is as tall as this; the terminal is what it is).
pub fn full_height(frame: &TopFrame) -> u16 {
    let backends = frame.backends.len().max(1);
    let shape = frame.shape.as_ref().map_or(1, |s| s.rows.len() + 1);
    (FIXED_ROWS as usize + backends + shape).min(200) as u16
}

/// Draws the frame into `area` of `buf`.
pub fn render(frame: &TopFrame, chrome: &Chrome, area: Rect, buf: &mut Buffer) {
    let spare = area.height.saturating_sub(FIXED_ROWS);
    let shape_rows = frame.shape.as_ref().map_or(1, |s| s.rows.len() as u16 + 1);
    // Backends first (they are what the screen is for), then the shape.
    let backend_rows = (frame.backends.len().max(1) as u16).min(spare.saturating_sub(2).max(1));
    let shape_rows = shape_rows.min(spare.saturating_sub(backend_rows));
    let [header, inbound, rejects, queue, bhead, blist, detail, shead, slist, fleet, _, footer] =
        Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(backend_rows),
            Constraint::Length(4),
            Constraint::Length(1),
            Constraint::Length(shape_rows),
            Constraint::Length(1),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(area);
    header_line(frame, header, buf);
    inbound_line(frame, inbound, buf);
    rejects_line(frame, rejects, buf);
    queue_line(frame, queue, buf);
    backends(frame, chrome.selected, bhead, blist, buf);
    if let Some(row) = frame.backends.get(chrome.selected) {
        backend_detail(row, frame.at, detail, buf);
    }
    shape(frame, shead, slist, buf);
    let fleet_text = fleet_line(frame, chrome.selected);
    Paragraph::new(Line::styled(fleet_text, DIM)).render(fleet, buf);
    if let Some(text) = &chrome.footer {
        Paragraph::new(Line::styled(text.as_str(), Style::new().add_modifier(Modifier::REVERSED)))
            .render(footer, buf);
    }
}

fn header_line(f: &TopFrame, area: Rect, buf: &mut Buffer) {
    let clock = chrono::DateTime::from_timestamp_millis(f.at as i64)
        .map(|t| t.with_timezone(&chrono::Local).format("%H:%M:%S").to_string())
        .unwrap_or_default();
    let line = Line::from(vec![
        Span::styled("sluice top", BOLD),
        Span::raw(format!("  {}  v{}  up {}  {clock}", f.host, f.version, duration(f.uptime_seconds))),
    ]);
    Paragraph::new(line).render(area, buf);
}

/// A label, a number, and a sparkline filling the rest of the row.
fn with_sparkline(label: String, points: &[u64], area: Rect, buf: &mut Buffer, style: Style) {
    let width = (label.chars().count() as u16 + 1).min(area.width);
    let [text, spark] = Layout::horizontal([Constraint::Length(width), Constraint::Min(0)]).areas(area);
    Paragraph::new(Line::raw(label)).render(text, buf);
    let take = points.len().saturating_sub(spark.width as usize);
    Sparkline::default().data(points[take..].iter().copied()).style(style).render(spark, buf);
}

fn inbound_line(f: &TopFrame, area: Rect, buf: &mut Buffer) {
    let label =
        format!("IN     accepted {:>7.1}/s  total {:<9}", f.inbound.accepted_per_s, f.inbound.accepted_total);
    with_sparkline(label, &f.inbound.accepted_history, area, buf, Style::new().fg(Color::Green));
}

fn rejects_line(f: &TopFrame, area: Rect, buf: &mut Buffer) {
    let mut text = String::from("       rejects ");
    if f.inbound.rejects.is_empty() {
        text.push_str(" none");
    }
    for r in f.inbound.rejects.iter().take(4) {
        text.push_str(&format!(" {} {} {:.1}/s ({})", r.stage, r.code, r.per_s, r.total));
    }
    Paragraph::new(Line::raw(text)).render(area, buf);
}

fn queue_line(f: &TopFrame, area: Rect, buf: &mut Buffer) {
    let q = &f.queue;
    let oldest = q.oldest_seconds.map(duration).unwrap_or_else(|| "-".into());
    let label = format!(
        "QUEUE  {} msg  {} rcpt  {} held  {}  oldest {oldest}",
        q.messages,
        q.recipients,
        q.held,
        bytes(q.bytes)
    );
    with_sparkline(label, &f.queue_history, area, buf, Style::new().fg(Color::Yellow));
}

/// The breaker column: the breaker, or `paused` while paused.
fn state_word(v: &BackendView, now: UnixMillis) -> (&str, Style) {
    if v.paused_until.is_some_and(|p| p > now) {
        ("paused", Style::new().fg(Color::Yellow))
    } else {
        match v.breaker.as_str() {
            "closed" => ("closed", Style::new().fg(Color::Green)),
            "half-open" => ("half-open", Style::new().fg(Color::Yellow)),
            other => (other, Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)),
        }
    }
}

/// The latency the limit is steered against: the backend's near-no-load
/// latency as the gate measured it.
pub fn baseline(v: &BackendView) -> Option<f64> {
    v.baseline_latency
}

/// The latency gradient the limit was last steered by (0 flat, 1 no more
/// goodput from more concurrency).
pub fn gradient(v: &BackendView) -> Option<f64> {
    v.gradient
}

fn ms(v: Option<f64>) -> String {
    v.map(|s| format!("{:.0}ms", s * 1000.0)).unwrap_or_else(|| "-".into())
}

/// The backend table's header and one row per backend; a name longer than
/// its column keeps its end (the host and port tell backends apart).
pub fn backend_cells(row: &BackendRow, now: UnixMillis, name_w: usize) -> (String, String, Style, String) {
    let v = &row.view;
    let name = if v.name.chars().count() > name_w {
        let skip = v.name.chars().count() - (name_w - 1);
        format!("…{}", v.name.chars().skip(skip).collect::<String>())
    } else {
        v.name.clone()
    };
    let (state, style) = state_word(v, now);
    let rest = format!(
        "{:>7} {:>6} {:>6} {:>5} {:>7.1} {:>7.1}",
        format!("{}/{}", v.concurrency, v.limit),
        ms(v.latency),
        ms(baseline(v)),
        gradient(v).map(|g| format!("{g:.2}")).unwrap_or_else(|| "-".into()),
        row.sent_per_s,
        row.deferred_per_s,
    );
    (format!("{name:<name_w$}"), format!("{state:<9}"), style, rest)
}

fn backends(f: &TopFrame, selected: usize, head: Rect, list: Rect, buf: &mut Buffer) {
    // 1 marker + name + 1 + 9 breaker + 1 + 47 numbers.
    let name_w = (head.width as usize).saturating_sub(59).clamp(8, 40);
    let title = format!(
        " {:<name_w$} {:<9} {:>7} {:>6} {:>6} {:>5} {:>7} {:>7}",
        "BACKEND", "BREAKER", "IN/LIM", "LAT", "BASE", "GRAD", "SENT/s", "DEFER/s"
    );
    Paragraph::new(Line::styled(title, BOLD)).render(head, buf);
    if f.backends.is_empty() {
        Paragraph::new(Line::styled(" no backends have been used yet", DIM)).render(list, buf);
        return;
    }
    // Keep the selected backend on screen.
    let rows = list.height as usize;
    let first = selected.saturating_sub(rows.saturating_sub(1));
    let lines: Vec<Line> = f
        .backends
        .iter()
        .enumerate()
        .skip(first)
        .take(rows)
        .map(|(i, row)| {
            let (name, state, style, rest) = backend_cells(row, f.at, name_w);
            let mark = if i == selected { "▸" } else { " " };
            Line::from(vec![
                Span::raw(format!("{mark}{name} ")),
                Span::styled(state, style),
                Span::raw(format!(" {rest}")),
            ])
        })
        .collect();
    Paragraph::new(lines).render(list, buf);
}

fn backend_detail(row: &BackendRow, now: UnixMillis, area: Rect, buf: &mut Buffer) {
    let v = &row.view;
    let [note, lat, lim, good] = Layout::vertical([Constraint::Length(1); 4]).areas(area);
    // The ▸ in the table says which backend this is: the line is for why.
    let mut parts = Vec::new();
    // Why the limit is where it is, while the gate is steering.
    if !v.holds_mail(now) && !v.reason.is_empty() {
        parts.push(format!("limit {}: {}", v.limit, v.reason));
    }
    let why = v.note(now);
    if !why.is_empty() {
        parts.push(why);
    }
    if !row.deferrals.is_empty() {
        let d: Vec<String> = row.deferrals.iter().map(|(r, n)| format!("{r} {n}")).collect();
        parts.push(format!("deferred: {}", d.join(", ")));
    }
    if parts.is_empty() {
        parts.push(format!("{}: no trouble seen", v.name));
    }
    let text = format!(" ▸ {}", parts.join(" · "));
    Paragraph::new(Line::styled(text, DIM)).render(note, buf);
    let last = |h: &[u64]| h.last().copied().unwrap_or(0);
    with_sparkline(
        format!("   latency {:>7}", format!("{}ms", last(&row.latency_history))),
        &row.latency_history,
        lat,
        buf,
        Style::new().fg(Color::Magenta),
    );
    with_sparkline(
        format!("   limit   {:>7}", format!("{}/{}", last(&row.in_use_history), last(&row.limit_history))),
        &row.limit_history,
        lim,
        buf,
        Style::new().fg(Color::Cyan),
    );
    with_sparkline(
        format!("   goodput {:>7}", format!("{}/s", last(&row.sent_history))),
        &row.sent_history,
        good,
        buf,
        Style::new().fg(Color::Green),
    );
}

fn shape(f: &TopFrame, head: Rect, list: Rect, buf: &mut Buffer) {
    let Some(s) = &f.shape else {
        Paragraph::new(Line::styled("SHAPE  the queue is empty", BOLD)).render(head, buf);
        return;
    };
    let cols = s.buckets_min.len() + 1;
    let name_w = (head.width as usize).saturating_sub(7 + 6 * cols + 1).clamp(8, 40);
    let mut title = format!("{:<name_w$} {:>6}", "SHAPE by age (min)", "TOTAL");
    for b in &s.buckets_min {
        title.push_str(&format!(" {:>5}", format!("<{b}")));
    }
    title.push_str(&format!(" {:>5}", format!("{}+", s.buckets_min.last().copied().unwrap_or(0))));
    Paragraph::new(Line::styled(title, BOLD)).render(head, buf);
    let line = |name: &str, counts: &[u64]| {
        let name = if name.chars().count() > name_w {
            let skip = name.chars().count() - (name_w - 1);
            format!("…{}", name.chars().skip(skip).collect::<String>())
        } else {
            name.to_owned()
        };
        let mut t = format!("{name:<name_w$} {:>6}", counts.iter().sum::<u64>());
        for c in counts {
            t.push_str(&format!(" {c:>5}"));
        }
        Line::raw(t)
    };
    let mut total = vec![0u64; cols];
    for (_, counts) in &s.rows {
        for (t, c) in total.iter_mut().zip(counts) {
            *t += c;
        }
    }
    let mut lines = vec![line("TOTAL", &total)];
    lines.extend(s.rows.iter().take(list.height.saturating_sub(1) as usize).map(|(n, c)| line(n, c)));
    Paragraph::new(lines).render(list, buf);
}

/// `3d4h`, `2h05m`, `7m12s`, `42s`.
pub fn duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn bytes(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / 1_048_576.0),
    }
}

/// The buffer as text lines, trailing blanks trimmed (the plain-text frame).
pub fn to_text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

#[cfg(test)]
pub(super) mod tests;

/// The fleet row: each host's deliveries against the selected backend's
/// fleet-wide limit (every backend's when the selected one has none).
fn fleet_line(frame: &TopFrame, selected: usize) -> String {
    let Some(shares) = &frame.fleet else {
        return "FLEET  single host: fleet mode is off (sluice_fleet_redis)".to_owned();
    };
    let backend = frame.backends.get(selected).map(|r| r.view.name.as_str());
    let mine: Vec<_> = shares.iter().filter(|s| Some(s.backend.as_str()) == backend).collect();
    let shown = if mine.is_empty() { shares.iter().collect() } else { mine };
    let parts: Vec<String> =
        shown.iter().map(|s| format!("{} {}/{}", s.host, s.in_flight, s.limit)).collect();
    format!("FLEET  {}", parts.join("  "))
}
