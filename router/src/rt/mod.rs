//! The worker's event loop: a single-threaded executor over an epoll
//! reactor (through mio), with timers. Each worker thread runs one.
//!
//! Why not tokio's current-thread runtime, which the workers used before:
//! on the proxy's hot path (two wake-ups per transaction) its generality
//! costs more user time than the router's own work. Every wake-up takes a
//! lock in the readiness record, reference-counts the waker, moves the
//! task's state with atomic compare-and-swaps, checks a budget in a thread
//! local, and every park reads the clock four times (busy-time metrics and
//! the time driver). Measured on the bare forwarder of `make bench`: 1.1 µs
//! of user time per pgbench transaction on tokio against 0.35 µs on a
//! hand-written mio loop. Here a task is polled with no atomic operation
//! unless another thread woke it, readiness is a bit in a `Cell`, and the
//! clock is read once per turn of the loop.
//!
//! What it offers is what the worker's code needs, no more: `spawn_local`,
//! [`TcpStream`]/[`TcpListener`], and [`time`]'s sleeps and timeouts.
//! Wakers are ordinary thread-safe `Waker`s, so tokio's runtime-agnostic
//! synchronisation (`Notify`, `oneshot`, `CancellationToken`) works inside,
//! and a wake-up from another thread goes through a queue and an eventfd.
//! Types here fall back to tokio's when used off a worker (the control
//! thread's health checks open server connections too): see `net::Tcp` and
//! [`time`].

mod io;
mod task;
pub mod time;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::clock::Tick;

pub use io::{connect, TcpListener, TcpStream};

use task::{Remote, Task};

/// mio tokens of the loop's own sources (sockets use their slab keys).
const REMOTE_TOKEN: mio::Token = mio::Token(usize::MAX - 1);

/// How many tasks run before the loop looks at the sockets again: a task
/// that keeps waking itself cannot keep the others' readiness unread.
const POLLS_PER_TURN: usize = 256;

thread_local! {
    /// The loop running on this thread, if any (set for the duration of
    /// [`block_on`]).
    static CORE: Cell<*const Core> = const { Cell::new(std::ptr::null()) };
}

/// Distinguishes loops, so a waker knows whether it fires on its own thread.
static NEXT_LOOP_ID: AtomicUsize = AtomicUsize::new(1);

/// One loop's state. Lives in a `Box` for the whole of `block_on`, which
/// publishes its address in `CORE`; everything here is used from that
/// thread only.
pub(crate) struct Core {
    id: usize,
    tasks: RefCell<slab::Slab<Task>>,
    /// Keys of tasks to poll, in wake-up order.
    ready: RefCell<VecDeque<usize>>,
    remote: Arc<Remote>,
    poll: RefCell<mio::Poll>,
    registry: mio::Registry,
    io: RefCell<slab::Slab<std::rc::Rc<io::IoSlot>>>,
    timers: RefCell<time::Timers>,
    /// The clock as read when epoll last returned: the loop's time.
    now: Cell<Tick>,
}

/// Runs `f` with this thread's loop, or returns None off a worker.
#[inline]
pub(crate) fn with_core<R>(f: impl FnOnce(&Core) -> R) -> Option<R> {
    let core = CORE.with(Cell::get);
    if core.is_null() {
        return None;
    }
    // SAFETY: set only by `block_on`, which keeps the Core alive (boxed,
    // never moved) until it clears the pointer, on this same thread.
    Some(f(unsafe { &*core }))
}

/// When this thread's loop last woke up; None off a worker.
#[inline]
pub fn turn_started() -> Option<Tick> {
    with_core(|core| core.now.get())
}

/// Whether this thread runs a loop (a worker) rather than tokio.
pub fn is_current() -> bool {
    !CORE.with(Cell::get).is_null()
}

/// Runs `future` as a task of this thread's loop. Only workers spawn; off
/// one this panics, as tokio's `spawn_local` outside a `LocalSet` would.
pub fn spawn_local(future: impl Future<Output = ()> + 'static) {
    with_core(|core| core.spawn(Box::pin(future))).expect("rt::spawn_local called outside a worker's event loop");
}

/// Runs the loop on this thread until `future` completes, then drops the
/// tasks still running and returns its output.
pub fn block_on<T: 'static>(future: impl Future<Output = T> + 'static) -> std::io::Result<T> {
    let poll = mio::Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let remote = Arc::new(Remote::new(mio::Waker::new(&registry, REMOTE_TOKEN)?));
    let core = Box::new(Core {
        id: NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed),
        tasks: RefCell::new(slab::Slab::new()),
        ready: RefCell::new(VecDeque::new()),
        remote,
        poll: RefCell::new(poll),
        registry,
        io: RefCell::new(slab::Slab::new()),
        timers: RefCell::new(time::Timers::default()),
        now: Cell::new(Tick::now()),
    });
    assert!(CORE.with(Cell::get).is_null(), "an event loop already runs on this thread");
    CORE.with(|c| c.set(&*core));
    let output = std::rc::Rc::new(RefCell::new(None));
    let slot = output.clone();
    core.spawn(Box::pin(async move {
        let value = future.await;
        *slot.borrow_mut() = Some(value);
    }));
    let result = core.run(&output);
    // Tasks are dropped with the loop still published: their sockets and
    // timers unregister from it.
    let tasks = std::mem::take(&mut *core.tasks.borrow_mut());
    drop(tasks);
    CORE.with(|c| c.set(std::ptr::null()));
    drop(core);
    result.map(|()| output.borrow_mut().take().expect("the main task finished"))
}

impl Core {
    fn spawn(&self, future: std::pin::Pin<Box<dyn Future<Output = ()>>>) {
        let key = {
            let mut tasks = self.tasks.borrow_mut();
            let entry = tasks.vacant_entry();
            let key = entry.key();
            entry.insert(Task::new(future, key, self.id, self.remote.clone()));
            key
        };
        self.ready.borrow_mut().push_back(key);
    }

    /// Queues a task woken on this thread.
    #[inline]
    fn schedule(&self, key: usize) {
        self.ready.borrow_mut().push_back(key);
    }

    fn run(&self, done: &RefCell<Option<impl Sized>>) -> std::io::Result<()> {
        let mut events = mio::Events::with_capacity(1024);
        loop {
            self.run_ready();
            if done.borrow().is_some() {
                return Ok(());
            }
            // From the turn's reading: a deadline may be met late by the
            // time the turn took, never early.
            let timeout = if self.ready.borrow().is_empty() {
                self.timers.borrow_mut().timeout(self.now.get())
            } else {
                Some(std::time::Duration::ZERO)
            };
            match self.poll.borrow_mut().poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            let now = Tick::now();
            self.now.set(now);
            for event in events.iter() {
                if event.token() == REMOTE_TOKEN {
                    continue;
                }
                io::dispatch(self, event);
            }
            for key in self.remote.take() {
                self.schedule(key);
            }
            if self.timers.borrow().armed() {
                let due = self.timers.borrow_mut().expire(now);
                for waker in due {
                    waker.wake();
                }
            }
        }
    }

    /// Polls queued tasks, up to `POLLS_PER_TURN`.
    fn run_ready(&self) {
        for _ in 0..POLLS_PER_TURN {
            let Some(key) = self.ready.borrow_mut().pop_front() else { return };
            self.poll_task(key);
        }
    }

    fn poll_task(&self, key: usize) {
        // The future is taken out while it runs: it may spawn tasks (which
        // grows the slab) or drop others.
        let (mut future, waker) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(task) = tasks.get_mut(key) else { return };
            let Some(parts) = task.take() else { return };
            parts
        };
        let mut cx = std::task::Context::from_waker(&waker);
        let finished = future.as_mut().poll(&mut cx).is_ready();
        let mut tasks = self.tasks.borrow_mut();
        if finished {
            drop(tasks.try_remove(key));
        } else if let Some(task) = tasks.get_mut(key) {
            task.put_back(future, waker);
        }
    }
}

#[cfg(test)]
mod tests;
