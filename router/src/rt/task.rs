//! Tasks and their wakers.
//!
//! A waker is an `Arc` (wakers must be `Send`), but waking a task from its
//! own thread, the common case, is a thread-local read, a flag and a queue
//! push: no atomic read-modify-write. Another thread's wake-up takes the
//! remote queue's lock and rings the loop's eventfd.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

type BoxedFuture = Pin<Box<dyn Future<Output = ()>>>;

pub(super) struct Task {
    /// None while the task is being polled.
    future: Option<BoxedFuture>,
    waker: Waker,
    handle: Arc<TaskWaker>,
}

impl Task {
    pub(super) fn new(future: BoxedFuture, key: usize, loop_id: usize, remote: Arc<Remote>) -> Task {
        let handle = Arc::new(TaskWaker { key, loop_id, queued: AtomicBool::new(true), remote });
        Task { future: Some(future), waker: Waker::from(handle.clone()), handle }
    }

    /// The future and its waker, to poll. Clears the queued flag first, so a
    /// wake-up during the poll queues the task again.
    #[inline]
    pub(super) fn take(&mut self) -> Option<(BoxedFuture, Waker)> {
        let future = self.future.take()?;
        self.handle.queued.store(false, Ordering::Relaxed);
        Some((future, std::mem::replace(&mut self.waker, Waker::noop().clone())))
    }

    #[inline]
    pub(super) fn put_back(&mut self, future: BoxedFuture, waker: Waker) {
        self.future = Some(future);
        self.waker = waker;
    }
}

struct TaskWaker {
    key: usize,
    loop_id: usize,
    /// Set while the task sits in a run queue, so it is queued once.
    queued: AtomicBool,
    remote: Arc<Remote>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let local = super::with_core(|core| {
            if core.id != self.loop_id {
                return false;
            }
            // Load and store, not a swap: only a remote wake-up can race
            // this one, and the worst it does is queue the task twice (a
            // spurious poll).
            if !self.queued.load(Ordering::Relaxed) {
                self.queued.store(true, Ordering::Relaxed);
                core.schedule(self.key);
            }
            true
        });
        if local != Some(true) && !self.queued.swap(true, Ordering::AcqRel) {
            self.remote.push(self.key);
        }
    }
}

/// Wake-ups from other threads: a queue and the loop's eventfd.
pub(crate) struct Remote {
    queue: Mutex<Vec<usize>>,
    pending: AtomicBool,
    waker: mio::Waker,
}

impl Remote {
    pub(super) fn new(waker: mio::Waker) -> Remote {
        Remote { queue: Mutex::new(Vec::new()), pending: AtomicBool::new(false), waker }
    }

    fn push(&self, key: usize) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).push(key);
        if !self.pending.swap(true, Ordering::AcqRel) {
            // A failed write leaves the task queued for the next turn.
            let _ = self.waker.wake();
        }
    }

    /// The keys queued since the last call: one atomic load when none were.
    pub(super) fn take(&self) -> Vec<usize> {
        if !self.pending.load(Ordering::Acquire) {
            return Vec::new();
        }
        // Cleared before the queue is read: a push after the read rings
        // again.
        self.pending.store(false, Ordering::Release);
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
