//! Sleeps and timeouts on the worker's loop, and tokio's elsewhere.
//!
//! The loop keeps deadlines in a binary heap and checks them against the
//! clock reading it takes once per turn. A sleep registers when first
//! polled and unregisters when dropped; heap entries of dropped sleeps are
//! skipped when they come up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::with_core;
use crate::clock::Tick;

/// A pending deadline.
struct Entry {
    waker: Option<Waker>,
    fired: bool,
}

#[derive(Default)]
pub(crate) struct Timers {
    /// (deadline, entry key, entry generation): a key is reused once its
    /// sleep is dropped, the generation tells the entries apart.
    heap: BinaryHeap<Reverse<(Tick, usize, u64)>>,
    entries: slab::Slab<(u64, Entry)>,
    generation: u64,
}

impl Timers {
    /// Whether any deadline is pending.
    pub(super) fn armed(&self) -> bool {
        !self.heap.is_empty()
    }

    /// How long the loop may block: until the earliest live deadline.
    pub(super) fn timeout(&mut self, now: Tick) -> Option<Duration> {
        self.drop_stale();
        let Reverse((deadline, _, _)) = self.heap.peek()?;
        Some(deadline.since(now))
    }

    /// Marks the entries due at `now` fired and returns their wakers.
    pub(super) fn expire(&mut self, now: Tick) -> Vec<Waker> {
        let mut due = Vec::new();
        while let Some(Reverse((deadline, key, generation))) = self.heap.peek().copied() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            if let Some((g, entry)) = self.entries.get_mut(key) {
                if *g == generation {
                    entry.fired = true;
                    due.extend(entry.waker.take());
                }
            }
        }
        due
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((_, key, generation))) = self.heap.peek().copied() {
            if self.entries.get(key).is_some_and(|(g, e)| *g == generation && !e.fired) {
                return;
            }
            self.heap.pop();
        }
    }

    fn insert(&mut self, deadline: Tick, waker: Waker) -> (usize, u64) {
        self.generation += 1;
        let generation = self.generation;
        let key = self.entries.insert((generation, Entry { waker: Some(waker), fired: false }));
        self.heap.push(Reverse((deadline, key, generation)));
        (key, generation)
    }

    /// Whether the entry fired; if not, its waker is updated.
    fn poll(&mut self, key: usize, generation: u64, waker: &Waker) -> bool {
        match self.entries.get_mut(key) {
            Some((g, entry)) if *g == generation => {
                if entry.fired {
                    return true;
                }
                if !entry.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    entry.waker = Some(waker.clone());
                }
                false
            }
            _ => true,
        }
    }

    fn remove(&mut self, key: usize, generation: u64) {
        if self.entries.get(key).is_some_and(|(g, _)| *g == generation) {
            self.entries.remove(key);
        }
    }
}

/// A sleep on the loop: registered on first poll.
struct LoopSleep {
    deadline: Tick,
    entry: Option<(usize, u64, usize)>,
}

impl LoopSleep {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let done = with_core(|core| {
            let mut timers = core.timers.borrow_mut();
            match self.entry {
                Some((key, generation, loop_id)) if loop_id == core.id => timers.poll(key, generation, cx.waker()),
                Some(_) => true,
                None => {
                    if self.deadline <= core.now.get() {
                        return true;
                    }
                    let (key, generation) = timers.insert(self.deadline, cx.waker().clone());
                    self.entry = Some((key, generation, core.id));
                    false
                }
            }
        });
        // Off the loop it was created on, a sleep cannot wait: it ends.
        if done.unwrap_or(true) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for LoopSleep {
    fn drop(&mut self) {
        if let Some((key, generation, loop_id)) = self.entry {
            with_core(|core| {
                if core.id == loop_id {
                    core.timers.borrow_mut().remove(key, generation);
                }
            });
        }
    }
}

/// A sleep on this thread's loop, or tokio's off a worker.
pub struct Sleep(SleepKind);

enum SleepKind {
    Loop(LoopSleep),
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

pub fn sleep_until(deadline: Instant) -> Sleep {
    sleep(deadline.saturating_duration_since(Instant::now()))
}

pub fn sleep(duration: Duration) -> Sleep {
    if super::is_current() {
        // A fresh reading, not the turn's: a deadline is never met early.
        Sleep(SleepKind::Loop(LoopSleep { deadline: Tick::now().after(duration), entry: None }))
    } else {
        Sleep(SleepKind::Tokio(Box::pin(tokio::time::sleep(duration))))
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            SleepKind::Loop(s) => s.poll(cx),
            SleepKind::Tokio(s) => s.as_mut().poll(cx),
        }
    }
}

/// The time limit of [`timeout`] passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline has elapsed")]
pub struct Elapsed;

/// `future`'s output, or `Elapsed` if it takes longer than `limit`.
pub async fn timeout<F: Future>(limit: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(future);
    let mut limit = sleep(limit);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut limit).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Ticks every `period`, the first at once; a late tick delays the next
/// ones rather than bunching them (tokio's `MissedTickBehavior::Delay`).
pub struct Interval {
    period: Duration,
    next: Instant,
}

pub fn interval(period: Duration) -> Interval {
    Interval { period, next: Instant::now() }
}

impl Interval {
    pub async fn tick(&mut self) {
        sleep_until(self.next).await;
        self.next = Instant::now() + self.period;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_and_timeouts_end_in_order_on_the_loop() {
        let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = order.clone();
        let started = Instant::now();
        let elapsed = crate::rt::block_on(async move {
            for (name, ms) in [("late", 60u64), ("early", 20)] {
                let log = seen.clone();
                crate::rt::spawn_local(async move {
                    sleep(Duration::from_millis(ms)).await;
                    log.borrow_mut().push(name);
                });
            }
            let never = std::future::pending::<()>();
            let timed_out = timeout(Duration::from_millis(30), never).await;
            assert_eq!(timed_out, Err(Elapsed));
            // A dropped sleep does not wake anyone or keep the loop busy.
            drop(sleep(Duration::from_millis(5)));
            sleep(Duration::from_millis(80)).await;
            started.elapsed()
        })
        .expect("loop runs");
        assert_eq!(*order.borrow(), vec!["early", "late"]);
        assert!(elapsed >= Duration::from_millis(80), "slept {elapsed:?}");
    }

    #[test]
    fn interval_ticks_at_once_then_after_each_period() {
        crate::rt::block_on(async {
            let started = Instant::now();
            let mut tick = interval(Duration::from_millis(25));
            tick.tick().await;
            assert!(started.elapsed() < Duration::from_millis(25));
            tick.tick().await;
            tick.tick().await;
            assert!(started.elapsed() >= Duration::from_millis(50));
        })
        .expect("loop runs");
    }
}
