//! The start gate: no context runs `main` before every context's `setup` returned.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Condvar, Mutex};

/// Holds every context's main loop until all contexts have run `setup`.
pub struct StartGate {
    arrived: Mutex<Vec<bool>>,
    cond: Condvar,
    pub(super) open: AtomicBool,
}

impl StartGate {
    /// A gate for `total` contexts.
    pub fn new(total: usize) -> StartGate {
        StartGate {
            arrived: Mutex::new(vec![false; total]),
            cond: Condvar::new(),
            open: AtomicBool::new(total == 0),
        }
    }

    /// Opens the gate without waiting for the others (shutdown during startup).
    pub fn abort(&self) {
        let _guard = self.arrived.lock();
        self.open.store(true, Ordering::SeqCst);
        self.cond.notify_all();
    }

    /// Context `index` has set up; true for the last to arrive.
    pub(super) fn arrive(&self, index: usize) -> bool {
        let mut arrived = self.arrived.lock();
        if arrived.get(index).copied().unwrap_or(true) {
            return false;
        }
        arrived[index] = true;
        if arrived.iter().all(|a| *a) && !self.open.swap(true, Ordering::SeqCst) {
            self.cond.notify_all();
            return true;
        }
        false
    }

    /// Waits until the gate is open.
    pub(super) fn wait_open(&self) {
        let mut arrived = self.arrived.lock();
        while !self.open.load(Ordering::SeqCst) {
            self.cond.wait(&mut arrived);
        }
    }
}
