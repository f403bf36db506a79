//! Wiring: opens the queue, starts listeners, the scheduler and the admin
//! endpoints, and owns the order of shutdown.
