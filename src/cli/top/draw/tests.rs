//! Tests of the `sluice top` screen: drawn with ratatui's `TestBackend`
//! at 80×24 (an SSH terminal) and as the plain-text frame.

use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::*;
use crate::server::admin::top::{Inbound, QueueNow, Reject, Shape};

fn view(name: &str, breaker: &str, concurrency: u32, limit: u32) -> BackendView {
    BackendView {
        name: name.into(),
        breaker: breaker.into(),
        paused_until: None,
        concurrency,
        limit,
        reason: "latency grows no faster than concurrency".into(),
        max_limit: 20,
        rate: 0.0,
        latency: Some(0.042),
        baseline_latency: Some(0.011),
        baseline_concurrency: Some(1),
        gradient: Some(0.35),
        gradient_between: Some((1, 2)),
        curve: vec![(1, 0.011), (2, 0.015)],
        last_error: (breaker == "open").then(|| "421 4.3.2 too busy".into()),
        probe_at: (breaker == "open").then_some(1_000_000 + 12_000),
        fleet: None,
    }
}

fn row(view: BackendView, sent: f64) -> BackendRow {
    BackendRow {
        view,
        sent_per_s: sent,
        deferred_per_s: 0.5,
        bounced_per_s: 0.0,
        deferrals: vec![("breaker".into(), 7), ("backend".into(), 3)],
        sent_history: (0..300).map(|i| i % 17).collect(),
        in_use_history: vec![3; 300],
        limit_history: (0..300).map(|i| 4 + i / 60).collect(),
        latency_history: (0..300).map(|i| 10 + i % 40).collect(),
    }
}

/// A frame during an overload: one backend open, one struggling, one fine.
pub fn sample_frame() -> TopFrame {
    TopFrame {
        at: 1_000_000,
        host: "mx1.example.test".into(),
        version: "0.1.0".into(),
        uptime_seconds: 7_384,
        queue: QueueNow {
            messages: 5_120,
            recipients: 5_300,
            held: 2,
            bytes: 21_000_000,
            oldest_seconds: Some(754),
        },
        inbound: Inbound {
            accepted_total: 91_234,
            accepted_per_s: 212.5,
            accepted_history: (0..300).map(|i| 200 + i % 25).collect(),
            rejects: vec![
                Reject { stage: "RCPT".into(), code: "550".into(), total: 120, per_s: 1.5 },
                Reject { stage: "END-OF-MESSAGE".into(), code: "452".into(), total: 40, per_s: 0.2 },
            ],
        },
        backends: vec![
            row(view("lmtp:[10.0.0.1]:24", "closed", 3, 8), 95.0),
            row(view("lmtp:[10.0.0.2]:24", "open", 0, 1), 0.0),
            row(view("lmtp:[10.0.0.3]:24", "closed", 12, 12), 110.2),
        ],
        shape: Some(Shape {
            at: 999_000,
            buckets_min: vec![5, 10, 20, 40, 80, 160, 320],
            rows: vec![
                ("lmtp:[10.0.0.2]:24".into(), vec![1_000, 2_000, 1_200, 0, 0, 0, 0, 0]),
                ("lmtp:[10.0.0.1]:24".into(), vec![80, 0, 0, 0, 0, 0, 0, 0]),
            ],
        }),
        queue_history: (0..300).map(|i| 1_000 + i * 13).collect(),
        fleet: None,
    }
}

fn lines(buf: &Buffer) -> Vec<String> {
    to_text(buf).lines().map(str::to_owned).collect()
}

#[test]
fn an_overload_fits_an_80_by_24_terminal() {
    let frame = sample_frame();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let chrome = Chrome { selected: 1, footer: Some("q quit".into()) };
    terminal.draw(|f| render(&frame, &chrome, f.area(), f.buffer_mut())).unwrap();
    let buf = terminal.backend().buffer().clone();
    let text = lines(&buf);
    let all = text.join("\n");
    assert!(text[0].starts_with("sluice top  mx1.example.test"), "{all}");
    assert!(all.contains("accepted   212.5/s"), "{all}");
    assert!(all.contains("RCPT 550 1.5/s (120)"), "{all}");
    assert!(all.contains("QUEUE  5120 msg  5300 rcpt  2 held  20.0 MiB  oldest 12m34s"), "{all}");
    // Every backend row, with its breaker and in-use/limit.
    let b2 = text.iter().find(|l| l.contains("lmtp:[10.0.0.2]:24") && l.contains("open")).expect(&all);
    assert!(b2.starts_with('▸'), "the selected backend is marked: {all}");
    assert!(b2.contains("0/1"), "{b2}");
    let b3 = text.iter().find(|l| l.contains("lmtp:[10.0.0.3]:24")).expect(&all);
    assert!(
        b3.contains("12/12") && b3.contains("42ms") && b3.contains("11ms") && b3.contains("110.2"),
        "{b3}"
    );
    // The selected backend's detail: why it holds mail, and the deferrals.
    assert!(all.contains("probe in 12s; 421 4.3.2 too busy"), "{all}");
    assert!(all.contains("deferred: breaker 7, backend 3"), "{all}");
    assert!(all.contains("latency") && all.contains("goodput"), "{all}");
    // The shape and the fleet's marked place, the footer on the last row.
    assert!(all.contains("TOTAL                      4280"), "{all}");
    assert!(all.contains("FLEET  single host"), "{all}");
    assert_eq!(text.len(), 24, "{all}");
    assert_eq!(text[23], "q quit");
    // Sparklines are drawn.
    assert!(all.contains('█') || all.contains('▇'), "{all}");
    // The breaker state is coloured.
    let y = text.iter().position(|l| l.contains("lmtp:[10.0.0.2]:24") && l.contains("open")).unwrap() as u16;
    let x = text[y as usize].find("open").map(|i| text[y as usize][..i].chars().count()).unwrap() as u16;
    assert_eq!(buf[(x, y)].fg, Color::Red);
}

#[test]
fn a_long_list_keeps_the_selected_backend_on_screen() {
    let mut frame = sample_frame();
    for i in 4..30 {
        frame.backends.push(row(view(&format!("lmtp:[10.0.0.{i}]:24"), "closed", 1, 4), 1.0));
    }
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let chrome = Chrome { selected: 28, footer: None };
    terminal.draw(|f| render(&frame, &chrome, f.area(), f.buffer_mut())).unwrap();
    let all = lines(terminal.backend().buffer()).join("\n");
    assert!(all.contains("▸lmtp:[10.0.0.29]:24"), "{all}");
}

#[test]
fn the_plain_text_frame_shows_every_row() {
    let mut frame = sample_frame();
    for i in 4..30 {
        frame.backends.push(row(view(&format!("lmtp:[10.0.0.{i}]:24"), "closed", 1, 4), 1.0));
    }
    let area = Rect::new(0, 0, 80, full_height(&frame));
    let mut buf = Buffer::empty(area);
    render(&frame, &Chrome::default(), area, &mut buf);
    let text = to_text(&buf);
    for i in 1..30 {
        assert!(text.contains(&format!("lmtp:[10.0.0.{i}]:24 ")), "{i}: {text}");
    }
    assert!(text.contains("TOTAL                      4280"), "{text}");
    assert!(!text.ends_with("\n\n"));
}

#[test]
fn an_idle_daemon_says_so() {
    let mut frame = sample_frame();
    frame.backends.clear();
    frame.shape = None;
    frame.inbound.rejects.clear();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    terminal.draw(|f| render(&frame, &Chrome::default(), f.area(), f.buffer_mut())).unwrap();
    let all = lines(terminal.backend().buffer()).join("\n");
    assert!(all.contains("no backends have been used yet"), "{all}");
    assert!(all.contains("the queue is empty"), "{all}");
    assert!(all.contains("rejects  none"), "{all}");
}

#[test]
fn durations_read_at_a_glance() {
    assert_eq!(duration(42), "42s");
    assert_eq!(duration(754), "12m34s");
    assert_eq!(duration(7_384), "2h03m");
    assert_eq!(duration(200_000), "2d7h");
}

#[test]
fn the_fleet_row_shows_each_hosts_share_of_the_selected_backend() {
    use crate::server::admin::top::FleetShare;
    let share = |host: &str, backend: &str, in_flight: u32| FleetShare {
        host: host.into(),
        backend: backend.into(),
        in_flight,
        limit: 8,
    };
    let mut frame = sample_frame();
    frame.fleet = Some(vec![
        share("mx1", "lmtp:[10.0.0.1]:24", 3),
        share("mx2", "lmtp:[10.0.0.1]:24", 2),
        share("mx1", "lmtp:[10.0.0.3]:24", 5),
    ]);
    assert_eq!(fleet_line(&frame, 0), "FLEET  mx1 3/8  mx2 2/8");
    assert_eq!(fleet_line(&frame, 2), "FLEET  mx1 5/8");
    // A backend outside the fleet's view: every share is shown.
    assert_eq!(fleet_line(&frame, 1), "FLEET  mx1 3/8  mx2 2/8  mx1 5/8");
    frame.fleet = None;
    assert!(fleet_line(&frame, 0).starts_with("FLEET  single host"));
}
