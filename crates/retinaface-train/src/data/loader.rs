//! Batches: each image decoded, augmented, matched and encoded on the rayon pool, in a
//! background thread that stays a batch or two ahead of the optimiser. Every random choice
//! of an image comes from (seed, epoch, position), so a run and a resumed run see the same
//! batches whatever the thread timing.

use super::augment::{augment, AugmentConfig};
use super::Dataset;
use crate::matching::{levels, targets_with_masks, Level, MatchConfig, TargetFace, Targets};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use retinaface::post::anchors::{priors, Prior};
use retinaface::ModelConfig;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

/// One batch, ready for the network.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Where it sits in the run: epoch and batch index within the epoch.
    pub epoch: usize,
    pub index: usize,
    /// `[B, 3, S, S]` BGR minus the mean.
    pub images: Vec<f32>,
    pub size: usize,
    pub targets: Vec<Targets>,
    /// Faces left after augmentation.
    pub faces: usize,
    /// Images that could not be read, with the reason; the batch goes on without them.
    pub failed: Vec<(PathBuf, String)>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// One image ready for a batch: CHW pixels, its targets, its face count.
type Prepared = (Vec<f32>, Targets, usize);

/// Makes the batches of a run.
pub struct Loader {
    dataset: Dataset,
    priors: Vec<Prior>,
    model: ModelConfig,
    augment: AugmentConfig,
    matching: MatchConfig,
    size: usize,
    batch: usize,
    seed: u64,
    /// The levels whose segmentation masks each sample carries (DF²S²'s branch), if any.
    mask_levels: Option<Vec<Level>>,
}

/// SplitMix64: spreads (seed, epoch, position) over the RNG seed space.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Loader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dataset: Dataset,
        model: &ModelConfig,
        augment: AugmentConfig,
        matching: MatchConfig,
        size: usize,
        batch: usize,
        seed: u64,
    ) -> Self {
        Loader {
            priors: priors(&model.anchors, size, size),
            dataset,
            model: model.clone(),
            augment,
            matching,
            size,
            batch: batch.max(1),
            seed,
            mask_levels: None,
        }
    }

    /// Also build every sample's box-level segmentation masks, from the same augmented faces
    /// and the same matching as its anchor targets.
    pub fn with_segmentation_masks(mut self) -> Self {
        self.mask_levels = Some(levels(&self.model.anchors, self.size, self.size));
        self
    }

    /// Batches per epoch (the last one may be short).
    pub fn batches_per_epoch(&self) -> usize {
        self.dataset.len().div_ceil(self.batch)
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The anchors of the training size.
    pub fn priors(&self) -> &[Prior] {
        &self.priors
    }

    /// The sample order of `epoch`: a permutation drawn from (seed, epoch).
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
            self.seed ^ mix(epoch as u64)
        )));
        order
    }

    /// Batch `index` of `epoch`.
    pub fn load(&self, epoch: usize, index: usize) -> Batch {
        let order = self.order(epoch);
        let start = (index * self.batch).min(order.len());
        let end = (start + self.batch).min(order.len());
        let s = self.size;
        let mean = self.model.mean_bgr;
        let mean_rgb = [mean[2], mean[1], mean[0]].map(|v| v.round().clamp(0.0, 255.0) as u8);
        let items: Vec<Result<Prepared, (PathBuf, String)>> = order[start..end]
            .par_iter()
            .enumerate()
            .map(|(k, &i)| {
                let sample = &self.dataset.samples[i];
                let img = retinaface::input::load_image(&sample.path)
                    .map_err(|e| (sample.path.clone(), e.to_string()))?;
                let key = mix(self.seed ^ mix((epoch as u64) << 32 | (start + k) as u64));
                let mut rng = ChaCha8Rng::seed_from_u64(key);
                let aug = augment(
                    &img,
                    &sample.faces,
                    s as u32,
                    mean_rgb,
                    &self.augment,
                    &mut rng,
                );
                let mut chw = vec![0.0f32; 3 * s * s];
                for (p, px) in aug.image.pixels().enumerate() {
                    // BGR planes minus the mean.
                    for c in 0..3 {
                        chw[c * s * s + p] = f32::from(px.0[2 - c]) - mean[c];
                    }
                }
                let faces: Vec<TargetFace> = aug
                    .faces
                    .iter()
                    .map(|f| TargetFace {
                        bbox: f.bbox,
                        landmarks: f.landmarks,
                    })
                    .collect();
                let t = targets_with_masks(
                    &self.priors,
                    &faces,
                    &self.matching,
                    self.model.variances,
                    self.mask_levels.as_deref(),
                );
                Ok((chw, t, faces.len()))
            })
            .collect();
        let mut batch = Batch {
            epoch,
            index,
            images: Vec::with_capacity(items.len() * 3 * s * s),
            size: s,
            targets: Vec::new(),
            faces: 0,
            failed: Vec::new(),
        };
        for item in items {
            match item {
                Ok((chw, t, n)) => {
                    batch.images.extend_from_slice(&chw);
                    batch.targets.push(t);
                    batch.faces += n;
                }
                Err(e) => batch.failed.push(e),
            }
        }
        batch
    }

    /// Batches from (`epoch`, `index`) on, made ahead on a background thread, until `epochs`.
    pub fn prefetch(self: Arc<Self>, epoch: usize, index: usize, epochs: usize) -> Receiver<Batch> {
        let (tx, rx) = sync_channel(2);
        std::thread::spawn(move || {
            let (mut e, mut i) = (epoch, index);
            while e < epochs {
                if i >= self.batches_per_epoch() {
                    e += 1;
                    i = 0;
                    continue;
                }
                if tx.send(self.load(e, i)).is_err() {
                    return;
                }
                i += 1;
            }
        });
        rx
    }
}
