//! The metrics waiting to be sent: flushed when `batch_size` are waiting or the flush interval
//! passes (the agent's timer), and on hide. Metrics whose send failed go back to the front; the
//! queue never holds more than [`MAX_QUEUED`], dropping the oldest (and counting them) beyond that,
//! so a page whose collector is down does not grow without bound.

use alloc::vec::Vec;

/// The most metrics held, waiting or waiting again after a failed send.
pub const MAX_QUEUED: usize = 1_000;
// A full batch always fits (the config refuses a larger batch size).
const _: () = assert!(MAX_QUEUED >= pulse_protocol::limits::MAX_METRICS_PER_BEACON);

/// `CAP`: the most held (the agent's is [`MAX_QUEUED`], above any batch size).
#[derive(Debug, Clone)]
pub struct Queue<T, const CAP: usize = MAX_QUEUED> {
    /// Oldest first. A `Vec`, not a `VecDeque`: the queue is short, and the deque's rotation code
    /// would cost the wasm more than the occasional shift costs the page.
    items: Vec<T>,
    batch_size: usize,
}

impl<T, const CAP: usize> Queue<T, CAP> {
    pub fn new(batch_size: usize) -> Queue<T, CAP> {
        Queue { items: Vec::new(), batch_size }
    }

    /// Adds a metric; returns `true` when a full batch is waiting (time to send). A metric dropped
    /// because the queue was full is counted in `dropped`.
    pub fn push(&mut self, item: T, dropped: &mut u32) -> bool {
        if self.items.len() == CAP {
            // Rare: the collector is unreachable.
            drop_front(&mut self.items, 1);
            *dropped += 1;
        }
        self.items.push(item);
        self.items.len() >= self.batch_size
    }

    /// Everything waiting, oldest first.
    pub fn take(&mut self) -> Vec<T> {
        core::mem::take(&mut self.items)
    }

    /// Puts back metrics whose send failed, ahead of newer ones; beyond the capacity the oldest go
    /// (counted in `dropped`).
    pub fn requeue(&mut self, mut failed: Vec<T>, dropped: &mut u32) {
        // Without room for all of them, the oldest of the failed are dropped.
        let excess = failed.len().saturating_sub(CAP.saturating_sub(self.items.len()));
        *dropped += excess as u32;
        drop_front(&mut failed, excess);
        failed.append(&mut self.items);
        self.items = failed;
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Removes the first `n` of `items` (all of them if fewer): `retain`, not `Vec::remove` or
/// `drain` (and their panic paths), one copy for both of the queue's uses.
fn drop_front<T>(items: &mut Vec<T>, mut n: usize) {
    items.retain(|_| {
        let keep = n == 0;
        n = n.saturating_sub(1);
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn a_full_batch_asks_to_be_sent() {
        let mut q = Queue::<_>::new(3);
        let mut dropped = 0;
        assert!(!q.push(1, &mut dropped));
        assert!(!q.push(2, &mut dropped));
        assert!(q.push(3, &mut dropped));
        assert_eq!(dropped, 0);
        assert_eq!(q.take(), vec![1, 2, 3]);
        assert!(q.is_empty());
    }

    #[test]
    fn failed_sends_go_back_in_front_of_newer_metrics() {
        let mut q = Queue::<_>::new(10);
        let mut dropped = 0;
        q.push(1, &mut dropped);
        q.push(2, &mut dropped);
        let sending = q.take();
        q.push(3, &mut dropped);
        q.requeue(sending, &mut dropped);
        assert_eq!(q.take(), vec![1, 2, 3]);
    }

    #[test]
    fn memory_is_bounded_and_drops_are_counted() {
        let mut q = Queue::<_, 4>::new(2);
        let mut dropped = 0;
        for i in 0..6 {
            q.push(i, &mut dropped);
        }
        assert_eq!(q.len(), 4);
        assert_eq!(dropped, 2);
        assert_eq!(q.take(), vec![2, 3, 4, 5], "the oldest went first");

        for i in 10..14 {
            q.push(i, &mut dropped);
        }
        q.requeue(vec![0, 1, 2], &mut dropped);
        assert_eq!(q.len(), 4);
        assert_eq!(dropped, 5);
        assert_eq!(q.take(), vec![10, 11, 12, 13], "a failed send does not push out newer metrics");
    }
}
