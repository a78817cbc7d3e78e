//! The service's shared state: the detector, the admission of requests and the workers that
//! run them.
//!
//! A request takes a slot before its body is read; there are `workers + queue` slots, and a
//! request that finds none is answered 503 at once. Its work (decoding, detection, encoding)
//! then runs when one of `workers` threads takes it: a request alone in the server runs its
//! layers on every core; when others are in flight, each runs on its worker's thread alone,
//! as `detect` runs a folder, one image per thread (measured with scripts/bench_serve.sh,
//! 640×480 JPEG, 2 cores, requests/s against `detect` on a folder: splitting every request
//! over the cores gave 0.86× at concurrency 8, one thread per request 1.09× but a 27 % slower
//! single request; the choice per request keeps both). So at most `workers + queue` bodies
//! are held, and at most `workers` images are decoded, at any time.

use crate::error::ApiError;
use crate::metrics::{Gauges, Metrics};
use crate::settings::Settings;
use retinaface::Detector;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

type Job = Box<dyn FnOnce(&Detector) + Send>;

/// What every handler shares.
pub struct AppState {
    pub detector: Arc<Detector>,
    pub settings: Settings,
    pub metrics: Metrics,
    /// Readiness: the model is loaded and the self-test passed.
    pub ready: AtomicBool,
    /// What `/v1/info` says of the model.
    pub model: String,
    slots: Arc<Semaphore>,
    running: Arc<AtomicUsize>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

/// A request's place among the admitted ones; freed when dropped.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl AppState {
    /// The state with `settings.workers` worker threads started.
    pub fn new(detector: Detector, model: String, settings: Settings) -> Arc<Self> {
        let detector = Arc::new(detector);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cores)
            .thread_name(|k| format!("retinaface-layers-{k}"))
            .build()
            .ok()
            .map(Arc::new);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let running = Arc::new(AtomicUsize::new(0));
        let slots = Arc::new(Semaphore::new(settings.workers + settings.queue));
        for k in 0..settings.workers {
            let (rx, detector, running) = (rx.clone(), detector.clone(), running.clone());
            let shared = pool.clone();
            let own = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(move |_| format!("retinaface-worker-{k}-layers"))
                .build()
                .ok();
            let (slots, capacity) = (slots.clone(), settings.workers + settings.queue);
            let spawned = std::thread::Builder::new()
                .name(format!("retinaface-worker-{k}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // Alone: nothing else running and no other slot taken.
                    let alone = running.fetch_add(1, Ordering::SeqCst) == 0
                        && slots.available_permits() + 1 >= capacity;
                    let pool = if alone {
                        shared.as_deref()
                    } else {
                        own.as_ref()
                    };
                    match pool {
                        Some(pool) => pool.install(|| job(&detector)),
                        None => job(&detector),
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                // Fewer workers than asked still serve; with none, the readiness self-test
                // fails and `run` reports it.
                eprintln!("warning: cannot start worker {k}: {e}");
            }
        }
        Arc::new(AppState {
            detector,
            metrics: Metrics::default(),
            ready: AtomicBool::new(false),
            model,
            slots,
            running,
            jobs: Mutex::new(Some(tx)),
            settings,
        })
    }

    /// A slot for one request, or 503 when every slot is taken.
    pub fn admit(&self) -> Result<Slot, ApiError> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(Slot)
            .map_err(|_| ApiError::busy())
    }

    /// Run `job` on a worker and wait for its answer. A job whose request has gone (timed
    /// out, client left) before a worker takes it is skipped; a panic in it is a 500.
    pub async fn run<T: Send + 'static>(
        &self,
        slot: Slot,
        job: impl FnOnce(&Detector) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |detector| {
            if tx.is_closed() {
                return;
            }
            let answer = retinaface::guard::catch(|| job(detector)).unwrap_or_else(|panic| {
                Err(ApiError::internal(format!("internal error: {panic}")))
            });
            // The slot is free once the work is done, before the answer travels.
            drop(slot);
            let _ = tx.send(answer);
        });
        let sent = match self.jobs.lock() {
            Ok(jobs) => jobs.as_ref().map(|tx| tx.send(job).is_ok()),
            Err(_) => None,
        };
        if sent != Some(true) {
            return Err(ApiError::internal("the workers have stopped"));
        }
        rx.await
            .unwrap_or_else(|_| Err(ApiError::internal("a worker stopped during the request")))
    }

    /// The pool's gauges now.
    pub fn gauges(&self) -> Gauges {
        let capacity = self.settings.workers + self.settings.queue;
        let in_flight = capacity.saturating_sub(self.slots.available_permits());
        let running = self.running.load(Ordering::SeqCst);
        Gauges {
            queued: in_flight.saturating_sub(running),
            in_flight,
            workers: self.settings.workers,
            queue_capacity: self.settings.queue,
        }
    }

    /// Stop the workers once the jobs already sent are done.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
    }
}
