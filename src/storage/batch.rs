//! A batched writer: rows queued by many tasks, committed by one task in transactions of many
//! rows, so that a busy room (or, next, the message archive) costs one database round trip per
//! batch rather than one per message.
//!
//! The queue is bounded: past `capacity` rows waiting, whoever queues waits for the writer
//! (back-pressure, never unbounded memory). A barrier is answered once every row queued
//! before it is committed, or has failed, so that a change that must never be durable before
//! earlier rows (a room's configuration after the messages it reflected) waits for them; it
//! reports a failure of any row queued since the barrier before it. At
//! shutdown the writer takes what is queued, commits it, and stops: nothing acknowledged is
//! lost.

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::storage::Error;

/// Where a batch goes: one transaction of many rows.
#[async_trait::async_trait]
pub trait BatchSink<Row>: Send + Sync + 'static {
    /// Commits every row of `rows` or none of them.
    async fn commit(&self, rows: &[Row]) -> Result<(), Error>;
    /// What the log says a failed batch was.
    fn what(&self) -> &'static str;
}

/// What the writer is asked to do, in order.
enum Job<Row> {
    Write(Row),
    Barrier(oneshot::Sender<bool>),
}

/// The writer has stopped (the server is shutting down): nothing more is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the batched writer has stopped")]
pub struct Stopped;

/// A barrier's answer: some row queued before it could not be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rows queued earlier could not be stored")]
pub struct NotStored;

/// The handle of a batched writer, for whoever queues rows. Cheap to clone.
pub struct BatchWriter<Row> {
    queue: mpsc::Sender<Job<Row>>,
}

impl<Row> Clone for BatchWriter<Row> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

/// The task that commits the rows; `run` it once.
pub struct BatchTask<Row, S> {
    queue: mpsc::Receiver<Job<Row>>,
    sink: S,
    batch: usize,
    /// Rows queued since the last barrier failed in an earlier batch.
    failed_since_barrier: bool,
}

impl<Row: Send + 'static> BatchWriter<Row> {
    /// A writer holding at most `capacity` queued rows and barriers, committing at most
    /// `batch` in one transaction.
    pub fn new<S: BatchSink<Row>>(
        sink: S,
        capacity: usize,
        batch: usize,
    ) -> (Self, BatchTask<Row, S>) {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        (
            Self { queue },
            BatchTask {
                queue: receiver,
                sink,
                batch: batch.max(1),
                failed_since_barrier: false,
            },
        )
    }

    /// Queues a row, waiting while the queue is full.
    pub async fn write(&self, row: Row) -> Result<(), Stopped> {
        self.queue.send(Job::Write(row)).await.map_err(|_| Stopped)
    }

    /// Waits until every row queued before this call is committed.
    pub async fn written(&self) -> Result<Result<(), NotStored>, Stopped> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Job::Barrier(done))
            .await
            .map_err(|_| Stopped)?;
        match answer.await {
            Ok(true) => Ok(Ok(())),
            Ok(false) => Ok(Err(NotStored)),
            Err(_) => Err(Stopped),
        }
    }
}

impl<Row: Send + 'static, S: BatchSink<Row>> BatchTask<Row, S> {
    /// Commits batches until `shutdown`, then what is still queued, then returns; also returns
    /// once every handle is dropped and the queue is empty.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut jobs = Vec::with_capacity(self.batch);
        loop {
            let received = tokio::select! {
                n = self.queue.recv_many(&mut jobs, self.batch) => n,
                _ = shutdown.cancelled() => {
                    self.queue.close();
                    while self.queue.recv_many(&mut jobs, self.batch).await > 0 {
                        self.commit(&mut jobs).await;
                    }
                    return;
                }
            };
            if received == 0 {
                return;
            }
            self.commit(&mut jobs).await;
        }
    }

    /// Commits the rows of a batch in one transaction, then answers its barriers: each with
    /// whether the rows queued between the barrier before it and itself were all committed.
    async fn commit(&mut self, jobs: &mut Vec<Job<Row>>) {
        let mut rows = Vec::with_capacity(jobs.len());
        let mut barriers = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Write(row) => rows.push(row),
                Job::Barrier(done) => barriers.push((rows.len(), done)),
            }
        }
        let failed = !rows.is_empty()
            && match self.sink.commit(&rows).await {
                Ok(()) => false,
                Err(err) => {
                    tracing::error!(error = %err, rows = rows.len(), what = self.sink.what(), "cannot store a batch");
                    true
                }
            };
        // Rows of this batch before the barrier being answered: none yet.
        let mut answered_up_to = 0;
        for (rows_before, done) in barriers {
            let this_batch = failed && rows_before > answered_up_to;
            let _ = done.send(!(self.failed_since_barrier || this_batch));
            self.failed_since_barrier = false;
            answered_up_to = rows_before;
        }
        if failed && answered_up_to < rows.len() {
            self.failed_since_barrier = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Keeps every batch it commits; fails the batches holding a row equal to `poison`.
    #[derive(Clone, Default)]
    struct Recorder {
        batches: Arc<Mutex<Vec<Vec<u32>>>>,
        poison: Option<u32>,
    }

    #[async_trait::async_trait]
    impl BatchSink<u32> for Recorder {
        async fn commit(&self, rows: &[u32]) -> Result<(), Error> {
            if self.poison.is_some_and(|p| rows.contains(&p)) {
                return Err(Error::LimitReached);
            }
            self.batches.lock().unwrap().push(rows.to_vec());
            Ok(())
        }
        fn what(&self) -> &'static str {
            "test rows"
        }
    }

    impl Recorder {
        fn committed(&self) -> Vec<u32> {
            self.batches.lock().unwrap().concat()
        }
    }

    #[tokio::test]
    async fn rows_are_committed_in_order_in_bounded_batches() {
        let sink = Recorder::default();
        let (writer, task) = BatchWriter::new(sink.clone(), 64, 8);
        // Queued before the task runs: the first batches are full.
        for row in 0..40 {
            writer.write(row).await.unwrap();
        }
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(task.run(shutdown.clone()));
        assert_eq!(writer.written().await, Ok(Ok(())));
        assert_eq!(sink.committed(), (0..40).collect::<Vec<_>>());
        let batches = sink.batches.lock().unwrap().clone();
        assert!(batches.iter().all(|b| b.len() <= 8), "{batches:?}");
        assert!(batches.len() >= 5);
        shutdown.cancel();
        running.await.unwrap();
        assert_eq!(writer.write(41).await, Err(Stopped));
        assert_eq!(writer.written().await, Err(Stopped));
    }

    #[tokio::test]
    async fn a_barrier_reports_a_failed_batch_before_it_and_only_that() {
        let sink = Recorder {
            poison: Some(3),
            ..Recorder::default()
        };
        let (writer, task) = BatchWriter::new(sink.clone(), 64, 64);
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(task.run(shutdown.clone()));
        writer.write(1).await.unwrap();
        assert_eq!(writer.written().await, Ok(Ok(())));
        writer.write(3).await.unwrap();
        assert_eq!(writer.written().await, Ok(Err(NotStored)));
        // A barrier with nothing new before it is not blamed for an earlier failure.
        assert_eq!(writer.written().await, Ok(Ok(())));
        writer.write(4).await.unwrap();
        assert_eq!(writer.written().await, Ok(Ok(())));
        assert_eq!(sink.committed(), [1, 4]);
        shutdown.cancel();
        running.await.unwrap();
    }

    #[tokio::test]
    async fn a_failure_is_reported_by_the_next_barrier_in_a_later_batch() {
        let sink = Recorder {
            poison: Some(3),
            ..Recorder::default()
        };
        // One job per batch: the barrier never shares the failed row's batch.
        let (writer, task) = BatchWriter::new(sink.clone(), 64, 1);
        writer.write(3).await.unwrap();
        writer.write(5).await.unwrap();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(task.run(shutdown.clone()));
        assert_eq!(writer.written().await, Ok(Err(NotStored)));
        assert_eq!(writer.written().await, Ok(Ok(())));
        assert_eq!(sink.committed(), [5]);
        shutdown.cancel();
        running.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_commits_what_is_queued() {
        let sink = Recorder::default();
        let (writer, task) = BatchWriter::new(sink.clone(), 64, 4);
        for row in 0..10 {
            writer.write(row).await.unwrap();
        }
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        // Cancelled before it ever ran: it still drains the queue.
        task.run(shutdown).await;
        assert_eq!(sink.committed(), (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_writer_wait_not_grow() {
        let sink = Recorder::default();
        let (writer, task) = BatchWriter::new(sink.clone(), 2, 2);
        writer.write(1).await.unwrap();
        writer.write(2).await.unwrap();
        let shutdown = CancellationToken::new();
        let running = {
            // The third waits: nothing takes rows yet.
            let third = writer.write(3);
            tokio::pin!(third);
            assert!(
                futures::poll!(&mut third).is_pending(),
                "a full queue holds the writer back"
            );
            let running = tokio::spawn(task.run(shutdown.clone()));
            third.await.unwrap();
            running
        };
        assert_eq!(writer.written().await, Ok(Ok(())));
        assert_eq!(sink.committed(), [1, 2, 3]);
        drop(writer);
        // Every handle gone and the queue empty: the task ends by itself.
        running.await.unwrap();
    }
}
