//! Dynamic batching for the service: requests are preprocessed concurrently, then queued for
//! one model thread that runs them together. The thread takes whatever is queued and waits (up
//! to `max_wait`) only while other requests are still being preprocessed, so a lone request
//! pays no wait and a busy service runs full batches.
//!
//! The queue is bounded: a request is admitted (holds one of `max_queue` places) from its
//! decoding until its answer, and one arriving at a full queue is refused at once (load
//! shedding) rather than piling up in memory. A request whose caller gave up (deadline passed)
//! is dropped from the queue unrun.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::classifier::Outputs;
use crate::{Classifier, Prediction};

/// A prediction and the size of the batch it ran in.
#[derive(Clone, Debug)]
pub struct Batched {
    /// The top-k labels.
    pub prediction: Prediction,
    /// The whole row of logits and probabilities.
    pub outputs: Outputs,
    /// How many images shared the forward pass.
    pub batch: usize,
}

/// Why a queued request got no prediction.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BatchError {
    /// The model thread is gone (shutting down).
    #[error("the model is shutting down")]
    Closed,
    /// The forward pass failed; the message says how.
    #[error("inference failed: {0}")]
    Failed(String),
}

/// The queue is full: the request is refused unqueued.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the service is overloaded: all {max_queue} places in the model's queue are taken")]
pub struct Full {
    /// The queue's size.
    pub max_queue: usize,
}

/// A place in the queue, held from decoding to the answer (or until the model thread drops
/// the abandoned request).
pub struct Admission {
    _place: OwnedSemaphorePermit,
}

struct Job {
    pixels: Vec<f32>,
    top_k: usize,
    reply: oneshot::Sender<Result<Batched, BatchError>>,
    place: Admission,
}

/// Counters the service reports (`/v1/model`, and `/metrics` through the same handles).
#[derive(Debug)]
pub struct Stats {
    /// Forward passes run.
    pub batches: Counter,
    /// Images predicted.
    pub images: Counter,
    /// Largest batch so far.
    pub largest_batch: AtomicU64,
    /// Queued requests dropped unrun because their caller had given up.
    pub abandoned: Counter,
    /// Images per forward pass.
    pub batch_sizes: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            batches: Counter::default(),
            images: Counter::default(),
            largest_batch: AtomicU64::default(),
            abandoned: Counter::default(),
            // 1, 2, 4, ... 256 images.
            batch_sizes: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
        }
    }
}

/// Handle to the model thread; cheap to share between request handlers.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    preparing: Arc<AtomicUsize>,
    stats: Arc<Stats>,
    places: Arc<Semaphore>,
    /// Most images in one forward pass.
    pub max_batch: usize,
    /// Longest wait for more images once one is queued.
    pub max_wait: Duration,
    /// Most requests admitted at once (decoding, queued or in a forward pass).
    pub max_queue: usize,
}

/// Marks a request as being preprocessed, so the model thread may wait for it.
pub struct Preparing(Arc<AtomicUsize>);

impl Drop for Preparing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Batcher {
    /// Starts the model thread, which owns `classifier` until every handle is dropped; at most
    /// `max_queue` requests are admitted at once.
    pub fn spawn(
        classifier: Classifier,
        max_batch: usize,
        max_wait: Duration,
        max_queue: usize,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Job>();
        let preparing = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(Stats::default());
        let max_batch = max_batch.max(1);
        let max_queue = max_queue.clamp(1, Semaphore::MAX_PERMITS);
        let worker = {
            let preparing = preparing.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("rekindle-model".into())
                .spawn(move || run(classifier, rx, preparing, stats, max_batch, max_wait))
                .expect("spawn the model thread")
        };
        (
            Self {
                tx,
                preparing,
                stats,
                places: Arc::new(Semaphore::new(max_queue)),
                max_batch,
                max_wait,
                max_queue,
            },
            worker,
        )
    }

    /// Call before preprocessing a request; drop the guard once it is queued or abandoned.
    pub fn preparing(&self) -> Preparing {
        self.preparing.fetch_add(1, Ordering::SeqCst);
        Preparing(self.preparing.clone())
    }

    /// A place in the queue, or [`Full`] at once when every place is taken.
    pub fn admit(&self) -> Result<Admission, Full> {
        self.places
            .clone()
            .try_acquire_owned()
            .map(|_place| Admission { _place })
            .map_err(|_| Full {
                max_queue: self.max_queue,
            })
    }

    /// Whether the queue is full now (a cheap check before reading a request's body).
    pub fn is_full(&self) -> bool {
        self.places.available_permits() == 0
    }

    /// Requests admitted now.
    pub fn queue_depth(&self) -> usize {
        self.max_queue - self.places.available_permits()
    }

    /// Queues one preprocessed image, holding `place` until it is answered, and waits for its
    /// prediction.
    pub async fn predict(
        &self,
        pixels: Vec<f32>,
        top_k: usize,
        guard: Preparing,
        place: Admission,
    ) -> Result<Batched, BatchError> {
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.send(Job {
            pixels,
            top_k,
            reply,
            place,
        });
        // Queued first, then no longer "preparing": the model thread never misses it.
        drop(guard);
        sent.map_err(|_| BatchError::Closed)?;
        answer.await.map_err(|_| BatchError::Closed)?
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

fn run(
    classifier: Classifier,
    rx: mpsc::Receiver<Job>,
    preparing: Arc<AtomicUsize>,
    stats: Arc<Stats>,
    max_batch: usize,
    max_wait: Duration,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let deadline = Instant::now() + max_wait;
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => {
                    jobs.push(j);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {}
            }
            if preparing.load(Ordering::SeqCst) == 0 {
                // A request queues before it stops counting as preparing, so one that just
                // finished is in the channel now: take it rather than leave it for a batch of 1.
                while jobs.len() < max_batch
                    && let Ok(j) = rx.try_recv()
                {
                    jobs.push(j);
                }
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(1))) {
                Ok(j) => jobs.push(j),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Callers past their deadline are gone: their places free up without a forward pass.
        let before = jobs.len();
        jobs.retain(|j| !j.reply.is_closed());
        stats.abandoned.inc_by((before - jobs.len()) as u64);
        if jobs.is_empty() {
            continue;
        }
        let n = jobs.len();
        let k = jobs.iter().map(|j| j.top_k).max().unwrap_or(1);
        let mut pixels = Vec::with_capacity(jobs.iter().map(|j| j.pixels.len()).sum());
        for j in &mut jobs {
            pixels.append(&mut j.pixels);
        }
        // A panic inside a backend must not take the service down with it.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            classifier
                .outputs(pixels, n)
                .into_iter()
                .map(|o| (classifier.predict_row(&o, k), o))
                .collect::<Vec<_>>()
        }));
        stats.batches.inc();
        stats.images.inc_by(n as u64);
        stats.batch_sizes.observe(n as f64);
        stats.largest_batch.fetch_max(n as u64, Ordering::Relaxed);
        match result {
            Ok(predictions) => {
                for (job, (mut p, outputs)) in jobs.into_iter().zip(predictions) {
                    p.top.truncate(job.top_k.max(1));
                    // The place frees before the answer: a caller that got one sees it free.
                    drop(job.place);
                    let _ = job.reply.send(Ok(Batched {
                        prediction: p,
                        outputs,
                        batch: n,
                    }));
                }
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "the backend panicked".into());
                tracing::error!(batch = n, error = %msg, "forward pass failed");
                for job in jobs {
                    drop(job.place);
                    let _ = job.reply.send(Err(BatchError::Failed(msg.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::tests::small;
    use image::{DynamicImage, Rgb, RgbImage};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_batches_and_get_their_own_answer() {
        let c = small();
        let images: Vec<DynamicImage> = (0..12u32)
            .map(|i| {
                DynamicImage::ImageRgb8(RgbImage::from_fn(24, 24, |x, y| {
                    Rgb([(x * i) as u8, (y * 9 + i) as u8, (i * 20) as u8])
                }))
            })
            .collect();
        let want = c.predict_images(&images, 3);
        let pixels: Vec<Vec<f32>> = images.iter().map(|i| c.preprocess(i)).collect();
        let (batcher, worker) = Batcher::spawn(c, 8, Duration::from_millis(500), 12);
        let batcher = Arc::new(batcher);
        // All twelve are "being preprocessed" before any is queued: the model thread waits
        // for them, so they run as a batch of 8 and one of 4.
        let guards: Vec<_> = (0..12)
            .map(|_| (batcher.preparing(), batcher.admit().unwrap()))
            .collect();
        assert!(batcher.is_full() && batcher.admit().is_err());
        let tasks: Vec<_> = pixels
            .into_iter()
            .zip(guards)
            .map(|(p, g)| {
                let b = batcher.clone();
                tokio::spawn(async move { b.predict(p, 3, g.0, g.1).await })
            })
            .collect();
        let mut sizes = Vec::new();
        for (t, w) in tasks.into_iter().zip(&want) {
            let got = t.await.unwrap().unwrap();
            sizes.push(got.batch);
            assert_eq!(got.prediction.top.len(), 3);
            for (a, b) in got.prediction.top.iter().zip(&w.top) {
                assert_eq!(a.index, b.index);
                assert!((a.probability - b.probability).abs() < 1e-5);
            }
        }
        assert!(sizes.iter().all(|&s| s == 8 || s == 4), "{sizes:?}");
        assert_eq!(batcher.stats().largest_batch.load(Ordering::Relaxed), 8);
        assert_eq!(batcher.queue_depth(), 0);
        drop(batcher);
        worker.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_and_abandoned_requests_free_their_place() {
        let c = small();
        let pixels = c.preprocess(&DynamicImage::ImageRgb8(RgbImage::new(24, 24)));
        let (batcher, worker) = Batcher::spawn(c, 4, Duration::from_secs(5), 2);
        let batcher = Arc::new(batcher);
        // Two admitted and still preparing: the model thread waits for them, the third is shed.
        let held = [batcher.admit().unwrap(), batcher.admit().unwrap()];
        let full = batcher.admit().err().unwrap();
        assert_eq!(full.max_queue, 2);
        assert_eq!(batcher.queue_depth(), 2);
        let [a, b] = held;
        let preparing = batcher.preparing();
        // One caller gives up before its answer: its job is dropped unrun, its place freed.
        let gone = {
            let (bt, p) = (batcher.clone(), pixels.clone());
            let g = batcher.preparing();
            tokio::spawn(async move { bt.predict(p, 1, g, a).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        let _ = gone.await;
        drop(preparing);
        let got = batcher
            .predict(pixels, 1, batcher.preparing(), b)
            .await
            .unwrap();
        assert_eq!(got.batch, 1);
        assert_eq!(batcher.stats().abandoned.get(), 1);
        assert_eq!(batcher.queue_depth(), 0);
        assert!(batcher.admit().is_ok());
        drop(batcher);
        worker.join().unwrap();
    }
}
