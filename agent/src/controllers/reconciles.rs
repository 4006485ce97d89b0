//! Bookkeeping every controller shares: a bounded number of reconciles at once, the objects
//! waiting for a slot (the queue depth), the reconciles running (what a shutdown waits for), and
//! results by reason.
//!
//! kube's controller keeps its own queue out of sight; the controllers therefore let it dispatch
//! every due object at once and bound the work here instead, where waiting can be counted.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Semaphore, SemaphorePermit, watch};

use crate::metrics::{
    ControllerLabels, ControllerMetrics, ControllerReasonLabels, ControllerResultLabels,
};

/// One controller's reconcile slots and counters.
#[derive(Debug)]
pub struct Reconciles {
    controller: &'static str,
    slots: Semaphore,
    in_flight: watch::Sender<usize>,
    metrics: ControllerMetrics,
}

/// A reconcile holding a slot; gives it back (and is no longer counted) when dropped.
#[derive(Debug)]
pub struct Running<'a> {
    reconciles: &'a Reconciles,
    running: Gauge,
    // Held for its Drop: the slot returns to the semaphore.
    _permit: Option<SemaphorePermit<'a>>,
    started: tokio::time::Instant,
}

/// Counts a waiter in the queue depth; decrements the gauge when dropped, so a waiter cancelled
/// by shutdown is uncounted too.
#[derive(Debug)]
pub struct Queued(Gauge);

impl Queued {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Queued(gauge)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Reconciles {
    /// Bookkeeping for `controller` with at most `slots` reconciles at once.
    pub fn new(controller: &'static str, slots: usize, metrics: &ControllerMetrics) -> Self {
        let reconciles = Reconciles {
            controller,
            slots: Semaphore::new(slots.max(1)),
            in_flight: watch::Sender::new(0),
            metrics: metrics.clone(),
        };
        // Present (as 0) from the start, so a dashboard sees the controller before any work.
        let _ = reconciles
            .metrics
            .queue_depth
            .get_or_create(&reconciles.label());
        let _ = reconciles
            .metrics
            .in_flight
            .get_or_create(&reconciles.label());
        reconciles
    }

    fn label(&self) -> ControllerLabels {
        ControllerLabels {
            controller: self.controller.to_string(),
        }
    }

    /// Waits for a slot (counted in the queue depth while waiting), then counts the reconcile as
    /// running until the returned guard is dropped.
    pub async fn admit(&self) -> Running<'_> {
        let label = self.label();
        let waiting = Queued::new(self.metrics.queue_depth.get_or_create(&label).clone());
        // The semaphore is never closed; without a permit the reconcile still runs.
        let permit = self.slots.acquire().await.ok();
        drop(waiting);
        let running = self.metrics.in_flight.get_or_create(&label).clone();
        running.inc();
        self.in_flight.send_modify(|count| *count += 1);
        Running {
            reconciles: self,
            running,
            _permit: permit,
            started: tokio::time::Instant::now(),
        }
    }

    /// Counts the caller in the queue depth until the guard is dropped: for a wait of the
    /// controller's own (the ExternalSecret refresh gate).
    pub fn queued(&self) -> Queued {
        Queued::new(
            self.metrics
                .queue_depth
                .get_or_create(&self.label())
                .clone(),
        )
    }

    /// Runs one reconcile in a slot and records its result (`reason` names an error). The work
    /// is boxed, so an object waiting for a slot holds a small future, not a whole reconcile's
    /// (an async fn's state is as large as its largest await point).
    pub async fn run_in_slot<T, E>(
        &self,
        work: impl std::future::Future<Output = Result<T, E>>,
        reason: impl FnOnce(&E) -> &'static str,
    ) -> Result<T, E> {
        let slot = self.admit().await;
        let result = Box::pin(work).await;
        self.record(result.as_ref().map(|_| ()).map_err(reason));
        drop(slot);
        result
    }

    /// Records how a reconcile ended: `Ok(())` or the error's reason.
    pub fn record(&self, outcome: Result<(), &str>) {
        let result = if outcome.is_ok() { "success" } else { "error" };
        self.metrics
            .reconciles
            .get_or_create(&ControllerResultLabels {
                controller: self.controller.to_string(),
                result: result.to_string(),
            })
            .inc();
        if let Err(reason) = outcome {
            self.metrics
                .errors
                .get_or_create(&ControllerReasonLabels {
                    controller: self.controller.to_string(),
                    reason: reason.to_string(),
                })
                .inc();
        }
    }

    /// Follows the number of running reconciles (for a shutdown that waits for them).
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.in_flight.subscribe()
    }

    fn observe(&self, elapsed: Duration) {
        self.metrics
            .duration
            .get_or_create(&self.label())
            .observe(elapsed.as_secs_f64());
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.reconciles.observe(self.started.elapsed());
        self.running.dec();
        self.reconciles
            .in_flight
            .send_modify(|count| *count = count.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(metrics: &ControllerMetrics) -> i64 {
        metrics
            .queue_depth
            .get_or_create(&ControllerLabels {
                controller: "test".into(),
            })
            .get()
    }

    fn running(metrics: &ControllerMetrics) -> i64 {
        metrics
            .in_flight
            .get_or_create(&ControllerLabels {
                controller: "test".into(),
            })
            .get()
    }

    #[tokio::test]
    async fn waiters_are_the_queue_depth_and_holders_are_in_flight() {
        let metrics = ControllerMetrics::default();
        let reconciles = std::sync::Arc::new(Reconciles::new("test", 1, &metrics));
        let first = reconciles.admit().await;
        assert_eq!((depth(&metrics), running(&metrics)), (0, 1));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let reconciles = std::sync::Arc::clone(&reconciles);
                tokio::spawn(async move {
                    let _slot = reconciles.admit().await;
                })
            })
            .collect();
        for _ in 0..100 {
            if depth(&metrics) == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(depth(&metrics), 2, "both waiters counted");
        assert_eq!(*reconciles.subscribe().borrow(), 1);
        drop(first);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!((depth(&metrics), running(&metrics)), (0, 0));
        assert_eq!(*reconciles.subscribe().borrow(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let metrics = ControllerMetrics::default();
        let reconciles = Reconciles::new("test", 1, &metrics);
        let _held = reconciles.admit().await;
        let waiting = tokio::time::timeout(Duration::from_millis(20), reconciles.admit()).await;
        assert!(waiting.is_err(), "no slot was free");
        assert_eq!(depth(&metrics), 0);
    }

    #[test]
    fn results_by_controller_and_reason() {
        let metrics = ControllerMetrics::default();
        let reconciles = Reconciles::new("test", 4, &metrics);
        reconciles.record(Ok(()));
        reconciles.record(Err("NotFound"));
        reconciles.record(Err("NotFound"));
        let count = |result: &str| {
            metrics
                .reconciles
                .get_or_create(&ControllerResultLabels {
                    controller: "test".into(),
                    result: result.into(),
                })
                .get()
        };
        assert_eq!((count("success"), count("error")), (1, 2));
        let errors = metrics
            .errors
            .get_or_create(&ControllerReasonLabels {
                controller: "test".into(),
                reason: "NotFound".into(),
            })
            .get();
        assert_eq!(errors, 2);
    }
}
