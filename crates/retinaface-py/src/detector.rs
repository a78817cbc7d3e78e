//! `Detector`: a loaded model, its options and its thread pools.

use crate::error::{image_to_py, to_py};
use crate::faces::Faces;
use crate::image::{Color, Source};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rayon::prelude::*;
use retinaface::input::resize::Resize;
use retinaface::tta::{self, Protocol};
use retinaface::{DetectOptions, Detector as Engine};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Idle pools kept for reuse, at most (one per call that ran at the same time as others).
const KEPT_POOLS: usize = 64;

/// A face detector: the model, the options of every call, and its worker threads.
///
///   model: a weights file `retinaface detect --model` takes (ONNX, PyTorch .pth,
///     safetensors); None for the embedded MobileNet-0.25 model (nothing is downloaded).
///   threshold: keep faces scoring above it.
///   nms: the IoU above which overlapping boxes are suppressed.
///   threads: the threads of one call (None: one per core). It does not limit how many
///     calls run at once: the GIL is released while detecting, and each call that runs
///     beside others gets its own threads, so Python threads sharing one Detector run in
///     parallel (give each threads=1 when there are as many of them as cores).
///   tta: the paper's test-time protocol (five scales, flips, box voting): slower, finds
///     more small faces.
///   max_side: a photo whose long side exceeds it is detected on a copy of that long side,
///     faces mapped back (None: always full resolution, the WIDER FACE protocol).
///   max_image_pixels: larger images (or passes) are refused with ValueError.
///
/// Results equal `retinaface detect --json` with the same options.
#[pyclass(module = "retinaface_rs", frozen)]
pub struct Detector {
    engine: Arc<Engine>,
    options: DetectOptions,
    protocol: Protocol,
    /// Idle thread pools: a call takes one (or starts one) and gives it back, so concurrent
    /// calls never queue behind each other in one pool.
    pools: Mutex<Vec<rayon::ThreadPool>>,
    threads: usize,
    model: Option<PathBuf>,
}

#[pymethods]
impl Detector {
    #[new]
    #[pyo3(
        text_signature = "(model=None, threshold=0.5, nms=0.4, threads=None, tta=False, max_side=2000, max_image_pixels=100000000)"
    )]
    // Python's keyword arguments, one per option.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (model=None, threshold=0.5, nms=0.4, threads=None, tta=false, max_side=Some(retinaface::detector::DEFAULT_MAX_SIDE), max_image_pixels=retinaface::input::DEFAULT_MAX_PIXELS))]
    fn new(
        py: Python<'_>,
        model: Option<PathBuf>,
        threshold: f32,
        nms: f32,
        threads: Option<usize>,
        tta: bool,
        max_side: Option<u32>,
        max_image_pixels: u64,
    ) -> PyResult<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = match threads {
            None => cores,
            Some(0) => return Err(PyValueError::new_err("threads must be at least 1")),
            Some(n) if n > 8 * cores => {
                return Err(PyValueError::new_err(format!(
                    "threads={n} is more than this machine can use: at most {} ({cores} cores)",
                    8 * cores
                )))
            }
            Some(n) => n,
        };
        if max_side == Some(0) {
            return Err(PyValueError::new_err("max_side must be positive (or None)"));
        }
        let options = DetectOptions {
            threshold,
            nms,
            max_side,
            max_image_pixels,
            ..DetectOptions::default()
        };
        options.validate().map_err(to_py)?;
        let protocol = if tta {
            Protocol::paper()
        } else {
            Protocol::single(Resize::Original)
        };
        let path = model.clone();
        let engine = py
            .detach(move || match path {
                Some(p) => Engine::from_file(&p),
                None => Engine::default_model(),
            })
            .map_err(to_py)?;
        let detector = Detector {
            engine: Arc::new(engine),
            options,
            protocol,
            pools: Mutex::new(Vec::new()),
            threads,
            model,
        };
        // The first call's pool, started now so that a failure is the constructor's.
        let pool = detector.take_pool()?;
        detector.give_back(pool);
        Ok(detector)
    }

    /// Detect the faces in one image, returned as a `Faces` result. The image: a uint8 array (H, W, 3) (also (H, W), (H, W, 1) and
    /// (H, W, 4), alpha ignored; any strides), an object numpy converts to one (a PIL
    /// image), a path, or the bytes of an encoded image (JPEG, PNG, WebP, BMP, TIFF; EXIF
    /// orientation applied). `color="bgr"` reads arrays in OpenCV's order.
    ///
    /// Raises ValueError (bad shape, undecodable or too large image), TypeError (not uint8,
    /// not an image), OSError (a file that cannot be read).
    #[pyo3(signature = (image, color="rgb"))]
    fn detect(&self, py: Python<'_>, image: &Bound<'_, PyAny>, color: &str) -> PyResult<Faces> {
        let source = Source::extract(image, Color::parse(color)?)?;
        let pool = self.take_pool()?;
        let result = py.detach(|| pool.install(|| self.run(source)));
        self.give_back(pool);
        result
    }

    /// Detect in a list of images (each anything `detect` takes), in parallel on the
    /// detector's threads, one image per thread: a list of `Faces` in the order of
    /// `images`. The first image that fails raises its error, prefixed with its index.
    #[pyo3(signature = (images, color="rgb"))]
    fn detect_batch(
        &self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        color: &str,
    ) -> PyResult<Vec<Faces>> {
        let color = Color::parse(color)?;
        let sources = images
            .try_iter()?
            .enumerate()
            .map(|(i, item)| Source::extract(&item?, color).map_err(|e| prefix(py, e, i)))
            .collect::<PyResult<Vec<_>>>()?;
        let pool = self.take_pool()?;
        let results: Vec<PyResult<Faces>> =
            py.detach(|| pool.install(|| sources.into_par_iter().map(|s| self.run(s)).collect()));
        self.give_back(pool);
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.map_err(|e| prefix(py, e, i)))
            .collect()
    }

    /// The score threshold.
    #[getter]
    fn threshold(&self) -> f32 {
        self.options.threshold
    }

    /// The NMS IoU threshold.
    #[getter]
    fn nms(&self) -> f32 {
        self.options.nms
    }

    /// The threads of one call.
    #[getter]
    fn threads(&self) -> usize {
        self.threads
    }

    /// Whether the test-time protocol is on.
    #[getter]
    fn tta(&self) -> bool {
        !self.protocol.is_plain()
    }

    /// The weights file, or None for the embedded model.
    #[getter]
    fn model(&self) -> Option<PathBuf> {
        self.model.clone()
    }

    /// The network, in words (backbone, heads).
    #[getter]
    fn network(&self) -> String {
        self.engine.config().summary()
    }

    /// Whether the model predicts landmarks (needed by `align`).
    #[getter]
    fn has_landmarks(&self) -> bool {
        self.engine.config().has_landmarks()
    }

    /// Pickling (Ray, multiprocessing, Spark): the arguments that build an equal detector;
    /// the weights are loaded again where it is unpickled.
    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> (
        Bound<'py, pyo3::types::PyType>,
        (Option<PathBuf>, f32, f32, usize, bool, Option<u32>, u64),
    ) {
        let d = slf.get();
        (
            slf.get_type(),
            (
                d.model.clone(),
                d.options.threshold,
                d.options.nms,
                d.threads,
                d.tta(),
                d.options.max_side,
                d.options.max_image_pixels,
            ),
        )
    }

    fn __repr__(&self) -> String {
        format!(
            "Detector(model={}, threshold={}, nms={}, threads={}, tta={})",
            self.model.as_ref().map_or("None".to_string(), |p| format!(
                "{:?}",
                p.display().to_string()
            )),
            self.options.threshold,
            self.options.nms,
            self.threads,
            if self.tta() { "True" } else { "False" }
        )
    }
}

impl Detector {
    /// An idle pool of `threads` threads, or a new one.
    fn take_pool(&self) -> PyResult<rayon::ThreadPool> {
        if let Some(pool) = self.pools.lock().ok().and_then(|mut p| p.pop()) {
            return Ok(pool);
        }
        let threads = self.threads;
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("retinaface-py-{i}"))
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start {threads} threads: {e}")))
    }

    /// Keep `pool` for the next call.
    fn give_back(&self, pool: rayon::ThreadPool) {
        if let Ok(mut pools) = self.pools.lock() {
            if pools.len() < KEPT_POOLS {
                pools.push(pool);
            }
        }
    }

    /// Decode and detect one image, on the current thread or pool; a panic stays this
    /// image's error.
    fn run(&self, source: Source) -> PyResult<Faces> {
        let landmarks = self.engine.config().has_landmarks();
        retinaface::guard::catch(|| {
            let img = source
                .into_image(self.options.max_image_pixels)
                .map_err(image_to_py)?;
            let faces =
                tta::detect(&self.engine, &img, &self.options, &self.protocol).map_err(to_py)?;
            Ok(Faces::new(faces, img.width(), img.height(), landmarks))
        })
        .unwrap_or_else(|panic| Err(PyRuntimeError::new_err(format!("internal error: {panic}"))))
    }
}

/// `e` with "images[i]: " before its message, of the same exception type.
fn prefix(py: Python<'_>, e: PyErr, i: usize) -> PyErr {
    let message = format!("images[{i}]: {}", e.value(py));
    let kind = e.get_type(py);
    match kind.call1((message,)) {
        Ok(instance) => PyErr::from_value(instance),
        Err(_) => e,
    }
}
