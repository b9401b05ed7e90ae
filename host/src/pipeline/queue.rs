//! The bounded queue in front of a stage, and the abort switch that frees
//! every thread blocked on any queue of the pipeline.
//!
//! A full queue blocks its producer in the channel (crossbeam-channel
//! parks the thread: no spinning); an empty one blocks its consumer. Both
//! waits also watch the pipeline's abort channel, which is closed only
//! when the pipeline is abandoned (its drain overran its budget), so no
//! worker stays blocked for ever. The end of the stream is one
//! [`Msg::End`] after the last item: a consumer that takes it puts it back
//! for the stage's other workers and leaves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded, select};
use otools_abi::Value;
use parking_lot::Mutex;

/// How long a send or receive retries before it parks the thread.
const SPIN: Duration = Duration::from_micros(50);

/// Yields the core once; true once [`SPIN`] has passed since the first call
/// (`since` starts `None`).
fn spun(since: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    let start = *since.get_or_insert(now);
    if now.duration_since(start) >= SPIN {
        return true;
    }
    std::thread::yield_now();
    false
}

/// What travels in a queue.
pub(super) enum Msg {
    /// An item and its number (from its source).
    Item(u64, Value),
    /// No item will follow.
    End,
}

/// The pipeline was abandoned while the thread waited.
#[derive(Debug)]
pub(super) struct Aborted;

/// Closing it wakes every thread blocked on a queue of the pipeline.
pub(super) struct Abort {
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
}

impl Abort {
    pub(super) fn new() -> Abort {
        let (tx, rx) = bounded(0);
        Abort {
            tx: Mutex::new(Some(tx)),
            rx,
        }
    }

    /// Wakes every blocked thread, now and later.
    pub(super) fn fire(&self) {
        self.tx.lock().take();
    }
}

/// A stage's input queue: capacity `size`, with its high-water mark.
pub(super) struct Queue {
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    /// The capacity.
    pub(super) size: usize,
    high_water: AtomicU64,
}

impl Queue {
    pub(super) fn new(size: usize) -> Queue {
        let (tx, rx) = bounded(size);
        Queue {
            tx,
            rx,
            size,
            high_water: AtomicU64::new(0),
        }
    }

    /// Items waiting now.
    pub(super) fn depth(&self) -> u64 {
        self.rx.len() as u64
    }

    /// The most items seen waiting (by a producer, right after a send).
    pub(super) fn high_water(&self) -> u64 {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Sends `msg`, waiting while the queue is full.
    pub(super) fn send(&self, msg: Msg, abort: &Abort) -> Result<(), Aborted> {
        let sent = match self.try_send_for_a_while(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => select! {
                send(self.tx, msg) -> r => r.map_err(|_| Aborted),
                recv(abort.rx) -> _ => Err(Aborted),
            },
            // The queue holds its own receiver: never disconnected.
            Err(TrySendError::Disconnected(_)) => Err(Aborted),
        };
        if sent.is_ok() {
            self.high_water
                .fetch_max(self.tx.len() as u64, Ordering::Relaxed);
        }
        sent
    }

    /// `try_send`, retried (yielding the core) for up to [`SPIN`] while the
    /// queue is full, so that a consumer a moment behind frees a slot
    /// before this thread parks: parking and waking cost tens of
    /// microseconds here, an item a fraction of one.
    fn try_send_for_a_while(&self, mut msg: Msg) -> Result<(), TrySendError<Msg>> {
        let mut since = None;
        loop {
            match self.tx.try_send(msg) {
                Err(TrySendError::Full(m)) if !spun(&mut since) => msg = m,
                r => return r,
            }
        }
    }

    /// `try_recv`, retried like [`Queue::try_send_for_a_while`].
    fn try_recv_for_a_while(&self) -> Result<Msg, TryRecvError> {
        let mut since = None;
        loop {
            match self.rx.try_recv() {
                Err(TryRecvError::Empty) if !spun(&mut since) => {}
                r => return r,
            }
        }
    }

    /// Puts the end marker back for the stage's other workers (it was just
    /// taken, so there is room).
    pub(super) fn pass_end_on(&self) {
        let _ = self.tx.try_send(Msg::End);
    }

    /// The next message, waiting while the queue is empty.
    pub(super) fn recv(&self, abort: &Abort) -> Result<Msg, Aborted> {
        match self.try_recv_for_a_while() {
            Ok(m) => Ok(m),
            Err(TryRecvError::Empty) => select! {
                recv(self.rx) -> m => m.map_err(|_| Aborted),
                recv(abort.rx) -> _ => Err(Aborted),
            },
            Err(TryRecvError::Disconnected) => Err(Aborted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_blocks_until_aborted_and_never_exceeds_its_size() {
        let q = std::sync::Arc::new(Queue::new(2));
        let abort = std::sync::Arc::new(Abort::new());
        for i in 0..2 {
            assert!(q.send(Msg::Item(i, Value::Int(0)), &abort).is_ok());
        }
        assert_eq!((q.depth(), q.high_water()), (2, 2));
        let (q2, a2) = (std::sync::Arc::clone(&q), std::sync::Arc::clone(&abort));
        let blocked = std::thread::spawn(move || q2.send(Msg::End, &a2).is_err());
        abort.fire();
        assert!(
            blocked.join().unwrap(),
            "the blocked send returns once aborted"
        );
        assert_eq!(q.high_water(), 2);
    }

    #[test]
    fn the_end_marker_reaches_every_worker() {
        let q = Queue::new(1);
        let abort = Abort::new();
        q.send(Msg::End, &abort).unwrap();
        for _ in 0..3 {
            assert!(matches!(q.recv(&abort), Ok(Msg::End)));
            q.pass_end_on();
        }
    }
}
