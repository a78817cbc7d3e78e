//! The public face of the library: weights in, faces out.

use crate::config::ModelConfig;
use crate::engine::Feature;
use crate::error::Error;
use crate::mesh::FaceMesh;
use crate::model::{Network, Workspace};
use crate::post::{anchors, coding, nms, Face};
use crate::weights::{self, NamedTensors};
use image::RgbImage;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Detection options; the defaults are the port's (and the CLI's `detect`).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectOptions {
    /// Keep faces scoring above this.
    pub threshold: f32,
    /// NMS IoU threshold.
    pub nms: f32,
    /// Candidates kept before NMS, best first.
    pub top_k: usize,
    /// Faces kept after NMS.
    pub keep: usize,
    /// Large photos: a photo whose long side exceeds this is detected on a copy with this
    /// long side (bilinear), faces mapped back. At full resolution a large photo's textures
    /// (sleeves, machinery, foliage) reach the scale of the network's smallest anchors and
    /// score as faces; see the README's measurement. `None`: always full resolution (the
    /// WIDER FACE protocol). Passes of a test-time protocol ([`crate::tta`]) have their own
    /// sizes and ignore it.
    pub max_side: Option<u32>,
    /// Largest pass in pixels (width × height): a larger one is refused, never allocated.
    pub max_image_pixels: u64,
}

/// Buffers kept between calls, at most: three passes of 2000 × 2000 (each about 130 MB).
const RETAINED_WORKSPACE_BYTES: usize = 400 << 20;

/// The default long side of the single pass on large photos (see [`DetectOptions::max_side`]).
pub const DEFAULT_MAX_SIDE: u32 = 2000;

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            threshold: 0.5,
            nms: 0.4,
            top_k: 5000,
            keep: 750,
            max_side: Some(DEFAULT_MAX_SIDE),
            max_image_pixels: crate::input::DEFAULT_MAX_PIXELS,
        }
    }
}

impl DetectOptions {
    /// Check ranges.
    pub fn validate(&self) -> Result<(), Error> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(Error::InvalidOption(format!(
                "threshold {} is outside [0, 1]",
                self.threshold
            )));
        }
        if !(0.0..=1.0).contains(&self.nms) {
            return Err(Error::InvalidOption(format!(
                "NMS IoU {} is outside [0, 1]",
                self.nms
            )));
        }
        if self.max_side == Some(0) {
            return Err(Error::InvalidOption(
                "the large-photo side limit must be positive (None for full resolution)".into(),
            ));
        }
        Ok(())
    }

    /// Refuse a pass of `w`×`h` above [`DetectOptions::max_image_pixels`].
    pub fn check_pass(&self, w: u32, h: u32) -> Result<(), Error> {
        let pixels = u64::from(w) * u64::from(h);
        if pixels > self.max_image_pixels {
            return Err(Error::InvalidOption(format!(
                "a pass of {w}×{h} ({pixels} pixels) is above the limit of {} pixels \
                 (--max-image-pixels)",
                self.max_image_pixels
            )));
        }
        Ok(())
    }
}

/// A face detector: a network with its weights, and buffers reused across calls.
///
/// `detect` may be called from several threads at once; each concurrent call gets its own
/// workspace (kept for reuse), so a batch allocates nothing after its first image of a size.
pub struct Detector {
    network: Network,
    workspaces: Mutex<Vec<Workspace>>,
    pool: Option<Arc<rayon::ThreadPool>>,
}

/// Raw network outputs of one pass, for benchmarks and tests.
pub struct HeadOutputs<'a> {
    pub levels: &'a [Feature],
    /// Per level, the context features the heads read (kept for networks with the mesh
    /// branch; `None` otherwise on the interpreted networks).
    pub context: Vec<Option<&'a Feature>>,
}

impl Detector {
    /// A detector for `config` from named tensors (port names; BatchNorm folded if present).
    pub fn new(config: &ModelConfig, tensors: &NamedTensors) -> Result<Self, Error> {
        Ok(Detector {
            network: Network::new(config, tensors)?,
            workspaces: Mutex::new(Vec::new()),
            pool: None,
        })
    }

    /// Load any supported weights file; the configuration comes from the file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let (tensors, config) = weights::read_model_file(path)?;
        Self::new(&config, &tensors).map_err(|e| match e {
            Error::Weights(w) => Error::Weights(weights::WeightsError::InFile {
                path: path.to_owned(),
                source: Box::new(w),
            }),
            e => e,
        })
    }

    /// The embedded MobileNet-0.25 model, with its mesh branch.
    pub fn default_model() -> Result<Self, Error> {
        let tensors = weights::embedded::tensors()?;
        Self::new(&weights::embedded::config(), &tensors)
    }

    /// Run passes on a dedicated pool of `threads` threads (0: the caller's rayon context,
    /// e.g. to run several images in parallel on one pool).
    pub fn with_threads(mut self, threads: usize) -> Result<Self, Error> {
        self.pool = if threads == 0 {
            None
        } else {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("retinaface-{i}"))
                .build()
                .map_err(|e| {
                    Error::InvalidOption(format!("cannot start {threads} threads: {e}"))
                })?;
            Some(Arc::new(pool))
        };
        Ok(self)
    }

    /// The network's configuration.
    pub fn config(&self) -> &ModelConfig {
        self.network.config()
    }

    /// The network (for export and inspection).
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Detect faces in an RGB image: at its own size, or, when its long side exceeds
    /// [`DetectOptions::max_side`], on a copy of that long side.
    pub fn detect(&self, image: &RgbImage, options: &DetectOptions) -> Result<Vec<Face>, Error> {
        Ok(self
            .detect_with(image, options, false)?
            .into_iter()
            .map(|(face, _)| face)
            .collect())
    }

    /// Whether the model has the dense regression branch ([`Detector::detect_meshes`]).
    pub fn has_mesh(&self) -> bool {
        self.network.mesh().is_some()
    }

    /// As [`Detector::detect`], with each face's 3D mesh from the dense regression branch
    /// (the same faces as `detect`'s: the branch runs on the kept detections only). An error
    /// for a model without the branch.
    pub fn detect_meshes(
        &self,
        image: &RgbImage,
        options: &DetectOptions,
    ) -> Result<Vec<(Face, FaceMesh)>, Error> {
        if !self.has_mesh() {
            return Err(Error::InvalidOption(
                "this model has no mesh branch (the embedded model has one)".into(),
            ));
        }
        Ok(self
            .detect_with(image, options, true)?
            .into_iter()
            .filter_map(|(face, mesh)| Some((face, mesh?)))
            .collect())
    }

    /// [`Detector::detect_meshes`] on a copy of `image` resized to `size` (bilinear), faces
    /// and meshes mapped back to `image`'s pixels (x and y by their scale, depth by the mean
    /// of the two). A size other than the photo's runs as one pass at exactly that size,
    /// whatever `options.max_side` says; the photo's own size is `detect_meshes`, whose
    /// `max_side` applies.
    pub fn detect_meshes_resized(
        &self,
        image: &RgbImage,
        size: (u32, u32),
        options: &DetectOptions,
    ) -> Result<Vec<(Face, FaceMesh)>, Error> {
        // At the photo's own size, and for a model without the branch (refused there).
        if size == image.dimensions() || !self.has_mesh() {
            return self.detect_meshes(image, options);
        }
        options.validate()?;
        Ok(self
            .detect_resized(image, size, options, true)?
            .into_iter()
            .filter_map(|(face, mesh)| Some((face, mesh?)))
            .collect())
    }

    /// One pass on `image` resized to `(pw, ph)`, faces (and meshes) mapped back.
    fn detect_resized(
        &self,
        image: &RgbImage,
        (pw, ph): (u32, u32),
        options: &DetectOptions,
        meshes: bool,
    ) -> Result<Vec<(Face, Option<FaceMesh>)>, Error> {
        let (w, h) = image.dimensions();
        if pw == 0 || ph == 0 {
            return Ok(Vec::new());
        }
        options.check_pass(pw, ph)?;
        let small = crate::input::resize::resize_bilinear(image, pw, ph);
        let one = DetectOptions {
            max_side: None,
            ..options.clone()
        };
        let (sx, sy) = (w as f32 / pw as f32, h as f32 / ph as f32);
        Ok(self
            .detect_with(&small, &one, meshes)?
            .into_iter()
            .map(|(f, m)| (f.scaled(sx, sy), m.map(|m| m.scaled(sx, sy))))
            .collect())
    }

    fn detect_with(
        &self,
        image: &RgbImage,
        options: &DetectOptions,
        meshes: bool,
    ) -> Result<Vec<(Face, Option<FaceMesh>)>, Error> {
        options.validate()?;
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        if let Some(side) = options.max_side {
            let long = w.max(h);
            if long > side {
                let k = f64::from(side) / f64::from(long);
                let (pw, ph) = crate::input::resize::scaled_size(w, h, k);
                return self.detect_resized(image, (pw, ph), options, meshes);
            }
        }
        options.check_pass(w, h)?;
        Ok(self.with_workspace(|ws, input| {
            crate::input::to_tensor_into(image, self.config().mean_bgr, input);
            self.network.forward(input, ws);
            let kept = decode(&self.network, ws, h as usize, w as usize, options);
            let mut found: Vec<Option<FaceMesh>> = Vec::new();
            if meshes {
                let anchors: Vec<AnchorAt> = kept.iter().map(|(_, at)| *at).collect();
                found = face_meshes(&self.network, ws, &anchors);
            }
            found.resize(kept.len(), None);
            kept.into_iter()
                .zip(found)
                .map(|((face, _), mesh)| (face, mesh))
                .collect()
        }))
    }

    /// Detect on a copy of `image` resized by `scale` (0 < scale ≤ 1, bilinear), with the
    /// faces in `image`'s coordinates: faster on large photos, at the cost of the smallest
    /// faces.
    pub fn detect_scaled(
        &self,
        image: &RgbImage,
        scale: f32,
        options: &DetectOptions,
    ) -> Result<Vec<Face>, Error> {
        if !(scale > 0.0 && scale <= 1.0) {
            return Err(Error::InvalidOption(format!(
                "scale {scale} must be in (0, 1]"
            )));
        }
        if scale == 1.0 {
            return self.detect(image, options);
        }
        let (w, h) = (
            (image.width() as f32 * scale).round().max(1.0) as u32,
            (image.height() as f32 * scale).round().max(1.0) as u32,
        );
        let small = image::imageops::resize(image, w, h, image::imageops::FilterType::Triangle);
        let (sx, sy) = (
            image.width() as f32 / w as f32,
            image.height() as f32 / h as f32,
        );
        Ok(self
            .detect(&small, options)?
            .iter()
            .map(|f| f.scaled(sx, sy))
            .collect())
    }

    /// Run the network alone on a prepared input, then hand its outputs to `f`.
    pub fn forward_with<R: Send>(
        &self,
        input: &Feature,
        f: impl FnOnce(HeadOutputs) -> R + Send,
    ) -> R {
        self.with_workspace(|ws, _| {
            self.network.forward(input, ws);
            let context = (0..self.config().levels())
                .map(|l| self.network.context(ws, l))
                .collect();
            f(HeadOutputs {
                levels: &ws.heads,
                context,
            })
        })
    }

    fn with_workspace<R: Send>(
        &self,
        f: impl FnOnce(&mut Workspace, &mut Feature) -> R + Send,
    ) -> R {
        let mut ws = self
            .workspaces
            .lock()
            .map(|mut v| v.pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut input = std::mem::take(&mut ws.input);
        let run = || f(&mut ws, &mut input);
        let out = match &self.pool {
            Some(pool) => pool.install(run),
            None => run(),
        };
        ws.input = input;
        if let Ok(mut v) = self.workspaces.lock() {
            // Kept for reuse within a budget: many threads that once ran large passes must
            // not hold all those buffers idle (the memory bound of the README).
            let kept: usize = v.iter().map(Workspace::bytes).sum();
            if kept + ws.bytes() <= RETAINED_WORKSPACE_BYTES {
                v.push(ws);
            }
        }
        out
    }
}

/// Where a candidate came from: its level, cell and anchor, and its prior in pixels
/// (`[cx, cy, w, h]`).
#[derive(Debug, Clone, Copy)]
struct AnchorAt {
    level: usize,
    cell: usize,
    anchor: usize,
    prior: [f32; 4],
}

/// The mesh branch's meshes for the candidates at `anchors`, from the pass's context
/// features (decoded together); `None` for all without the branch.
fn face_meshes(net: &Network, ws: &mut Workspace, anchors: &[AnchorAt]) -> Vec<Option<FaceMesh>> {
    let Some(branch) = net.mesh() else {
        return vec![None; anchors.len()];
    };
    let c = branch.channels();
    let params: Vec<Option<Vec<f32>>> = anchors
        .iter()
        .map(|at| {
            let context = net.context(&*ws, at.level)?;
            let features = context.data.get(at.cell * c..(at.cell + 1) * c)?;
            Some(branch.params(at.level, at.anchor, features))
        })
        .collect();
    let ready: Vec<(&[f32], [f32; 4])> = params
        .iter()
        .zip(anchors)
        .filter_map(|(p, at)| Some((p.as_deref()?, at.prior)))
        .collect();
    let mut meshes = branch.face_meshes_with(&ready, &mut ws.mesh).into_iter();
    params
        .iter()
        .map(|p| p.as_ref().and_then(|_| meshes.next()))
        .collect()
}

/// Threshold, decode (only the anchors above the threshold), top-k, NMS: the kept faces with
/// their anchors.
fn decode(
    net: &Network,
    ws: &Workspace,
    h: usize,
    w: usize,
    o: &DetectOptions,
) -> Vec<(Face, AnchorAt)> {
    let config = net.config();
    let var = config.variances;
    // score = softmax(c)[1] = σ(c1 − c0) > t  ⟺  c1 − c0 > logit(t) (a sigmoid head: c0 >
    // logit(t)); test the logit first with a margin, then the exact score, so the fast path
    // never changes a decision.
    let t = o.threshold.clamp(1e-7, 1.0 - 1e-7);
    let logit_t = (t / (1.0 - t)).ln() - 1e-3;
    let mut faces = Vec::new();
    for (level, &step) in config.anchors.steps.iter().enumerate() {
        let layout = net.head_layout(level);
        let shapes = net.anchor_shapes(level);
        let out = &ws.heads[level];
        let width = layout.width();
        for (cell, px) in out.data.chunks_exact(width).enumerate() {
            for (a, &shape) in shapes.iter().enumerate() {
                let c = &px[layout.class(a)..layout.class(a) + layout.scores];
                let (logit, score): (f32, fn(&[f32]) -> f32) = match c {
                    [c0, c1] => (c1 - c0, |c| softmax2(c[0], c[1])),
                    _ => (c[0], |c| 1.0 / (1.0 + (-c[0]).exp())),
                };
                if logit <= logit_t {
                    continue;
                }
                let score = score(c);
                if score <= o.threshold {
                    continue;
                }
                let (y, x) = (cell / out.w, cell % out.w);
                let p = anchors::prior_wh(step, shape, y, x, h, w);
                let b = coding::decode_box(&p, &px[layout.bbox(a)..layout.bbox(a) + 4], var);
                let (wf, hf) = (w as f32, h as f32);
                let landmarks = layout.landmarks.then(|| {
                    let at = layout.landmarks(a);
                    coding::decode_landmarks(&p, &px[at..at + 10], var)
                        .map(|q| [q[0] * wf, q[1] * hf])
                });
                let face = Face {
                    bbox: [b[0] * wf, b[1] * hf, b[2] * wf, b[3] * hf],
                    score,
                    landmarks,
                };
                let at = AnchorAt {
                    level,
                    cell,
                    anchor: a,
                    prior: [p.cx * wf, p.cy * hf, p.w * wf, p.h * hf],
                };
                faces.push((face, at));
            }
        }
    }
    // Faces are in anchor order here. The reference takes the top k by a stable descending
    // sort (ties: lower anchor first), then runs NMS in reversed ascending order (ties: higher
    // anchor first); equal float scores do occur, and the order decides which box survives.
    faces.sort_by(|a, b| b.0.score.total_cmp(&a.0.score));
    faces.truncate(o.top_k);
    let mut order: Vec<usize> = (0..faces.len()).collect();
    order.sort_by(|&i, &j| {
        faces[j]
            .0
            .score
            .total_cmp(&faces[i].0.score)
            .then(j.cmp(&i))
    });
    let ordered: Vec<Face> = order.iter().map(|&i| faces[i].0).collect();
    nms::nms_indices(&ordered, o.nms, o.keep)
        .into_iter()
        .map(|k| faces[order[k]])
        .collect()
}

/// The face probability of a two-way softmax, computed as the reference's softmax is.
#[inline]
fn softmax2(c0: f32, c1: f32) -> f32 {
    let m = c0.max(c1);
    let (e0, e1) = ((c0 - m).exp(), (c1 - m).exp());
    e1 / (e0 + e1)
}
