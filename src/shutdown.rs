//! Shutdown is a token and a guard (STYLE.md rule 10).
//!
//! The token is cancelled in stages so the order of a graceful stop is
//! explicit: listeners stop accepting, sessions finish their DATA commits and
//! then answer `421`, the scheduler stops claiming, deliveries record their
//! results, the queue writer flushes. Each long-lived task holds a [`Guard`];
//! the server waits for the guards of one stage before starting the next.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// One stage of shutdown: a token tasks watch and a tracker of the tasks
/// still running in it.
#[derive(Debug, Clone, Default)]
pub struct Stage {
    token: CancellationToken,
    tracker: TaskTracker,
}

/// Held by a running task; the stage is finished when every guard is dropped.
#[derive(Debug)]
pub struct Guard {
    _token: TaskTrackerToken,
}

impl Stage {
    /// A new stage, not cancelled.
    pub fn new() -> Stage {
        Stage::default()
    }

    /// Registers a task of this stage.
    pub fn guard(&self) -> Guard {
        Guard { _token: self.tracker.token() }
    }

    /// Resolves when the stage is asked to stop.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// True once the stage was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Asks the stage's tasks to stop.
    pub fn cancel(&self) {
        self.token.cancel()
    }

    /// Asks the stage to stop and waits for every guard to drop.
    pub async fn stop(&self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Waits until every guard has dropped, without asking anyone to stop
    /// (the grace period before `stop`).
    pub async fn wait_idle(&self) {
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }

    /// The underlying token, for `select!` on `token.cancelled()` by value.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }
}
