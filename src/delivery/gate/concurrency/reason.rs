//! Why the adaptive limit is what it is: the words logs and `sluice
//! backend list` show for each change.

/// Why the limit is what it is (logs, `sluice backend list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `initial_destination_concurrency`, nothing measured yet.
    Start,
    /// One round one step up, to be compared with home.
    TryUp,
    /// One round one step down, to be compared with home.
    TryDown,
    /// The try up brought goodput: it is home now.
    Climb,
    /// The try up brought no goodput worth its load: back home.
    NoGain,
    /// The deliveries above the try down brought no goodput: it is home now.
    Descend,
    /// The try down lost goodput: back home.
    Needed,
    /// The try's level was not filled (not enough mail): back home.
    NotUsed,
    /// Smoothed latency passed `sluice_latency_target`.
    LatencyTarget,
    /// `421`, `4xx` at connect/MAIL/DATA, or a timeout.
    Overload,
    /// Restart after the breaker closed, or a configuration change.
    Reset,
    /// `sluice_adaptive_concurrency = no`.
    Fixed,
}

impl Reason {
    /// Short text for logs and `sluice backend list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Start => "starting level",
            Reason::TryUp => "trying one step up",
            Reason::TryDown => "trying one step down",
            Reason::Climb => "more concurrency gave more goodput",
            Reason::NoGain => "more concurrency gave no more goodput",
            Reason::Descend => "fewer deliveries gave as much goodput",
            Reason::Needed => "fewer deliveries gave less goodput",
            Reason::NotUsed => "not enough mail to use more",
            Reason::LatencyTarget => "latency above target",
            Reason::Overload => "overload reply or timeout",
            Reason::Reset => "reset",
            Reason::Fixed => "adaptive concurrency off",
        }
    }

    /// Worth a log line at `info` (the rest are the steady state's
    /// comings and goings, at `debug`).
    pub fn is_news(self) -> bool {
        matches!(
            self,
            Reason::Climb | Reason::Descend | Reason::LatencyTarget | Reason::Overload | Reason::Reset
        )
    }
}
