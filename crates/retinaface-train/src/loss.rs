//! The multi-task losses. RetinaFace's (SPEC §1.5): softmax cross-entropy over faces and the
//! hardest negatives (OHEM), smooth-L1 on boxes of face anchors and on landmarks of face
//! anchors whose face has them, each normalised by its anchor count, then weighted.
//! DF²S²'s (SPEC §2): sigmoid focal loss over every anchor that is not ignored and smooth-L1
//! boxes, both normalised per pyramid level by that level's face anchors, plus per-pixel
//! sigmoid cross-entropy of each level's segmentation logits against its box-level mask.

use crate::matching::Targets;
use crate::network::{tensor, HeadOutput};
use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The classification loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Classification {
    /// Cross-entropy over the faces and the hardest negatives (OHEM), normalised by all face
    /// anchors of the batch (RetinaFace).
    #[default]
    CrossEntropy,
    /// Sigmoid focal loss over every anchor not ignored, normalised per level by its face
    /// anchors; boxes are normalised per level alike (DF²S²).
    Focal,
}

/// Loss weights, OHEM and the focal loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// λ for the box term (the paper 0.25, the port 2.0, DF²S² λ1 = 1).
    pub box_weight: f32,
    /// λ for the landmark term (the paper 0.1, the port 1.0).
    pub landmark_weight: f32,
    /// Hard negatives kept per positive anchor (the port 7, the paper 3); cross-entropy only.
    pub negatives_per_positive: f32,
    /// `cross-entropy` (default) or `focal`.
    #[serde(default)]
    pub classification: Classification,
    /// Focal loss α: the weight of face anchors (background 1 − α).
    #[serde(default = "default_alpha")]
    pub focal_alpha: f32,
    /// Focal loss γ: how much easy anchors are discounted.
    #[serde(default = "default_gamma")]
    pub focal_gamma: f32,
    /// λ2 for DF²S²'s segmentation term (0 trains without the branch); networks without a
    /// segmentation head ignore it.
    #[serde(default = "default_segmentation")]
    pub segmentation_weight: f32,
    /// λ3 for the mesh branch's L_pixel (the paper's 0.01); networks without the branch
    /// ignore it.
    #[serde(default = "default_mesh_weight")]
    pub mesh_weight: f32,
    /// μ for the mesh's landmark term beside L_pixel: the five landmark vertices, projected,
    /// against the labelled points (mean |Δ| over the crop's side). 0, the paper's choice,
    /// leaves the geometry to L_pixel alone, which lets the mesh drift off the face
    /// (docs/mesh.md).
    #[serde(default)]
    pub mesh_landmark_weight: f32,
    /// Face anchors rendered per image, the best-overlapping first (the renderer's cost is
    /// per anchor).
    #[serde(default = "default_mesh_anchors")]
    pub mesh_anchors: usize,
    /// The side of the rendered crops, pixels.
    #[serde(default = "default_mesh_crop")]
    pub mesh_crop: usize,
}

fn default_mesh_weight() -> f32 {
    0.01
}

fn default_mesh_anchors() -> usize {
    4
}

fn default_mesh_crop() -> usize {
    64
}

fn default_alpha() -> f32 {
    0.25
}

fn default_gamma() -> f32 {
    2.0
}

fn default_segmentation() -> f32 {
    1.0
}

impl LossConfig {
    pub fn port() -> Self {
        LossConfig {
            box_weight: 2.0,
            landmark_weight: 1.0,
            negatives_per_positive: 7.0,
            classification: Classification::CrossEntropy,
            focal_alpha: default_alpha(),
            focal_gamma: default_gamma(),
            segmentation_weight: default_segmentation(),
            mesh_weight: default_mesh_weight(),
            mesh_landmark_weight: 0.0,
            mesh_anchors: default_mesh_anchors(),
            mesh_crop: default_mesh_crop(),
        }
    }

    pub fn paper() -> Self {
        LossConfig {
            box_weight: 0.25,
            landmark_weight: 0.1,
            negatives_per_positive: 3.0,
            ..Self::port()
        }
    }

    /// DF²S²: focal loss (α 0.25, γ 2), λ1 = 1, λ2 = 1, no landmarks.
    pub fn df2s2() -> Self {
        LossConfig {
            box_weight: 1.0,
            landmark_weight: 0.0,
            classification: Classification::Focal,
            ..Self::port()
        }
    }
}

/// The loss of a batch: the total to back-propagate and its parts (already divided by their
/// counts, before weighting) for the log.
#[derive(Debug, Clone)]
pub struct Loss {
    pub total: Tensor<1>,
    pub class: f32,
    pub boxes: f32,
    pub landmarks: f32,
    /// The segmentation term (summed over levels), 0 without one.
    pub segmentation: f32,
    /// The mesh branch's L_pixel, 0 without one.
    pub mesh: f32,
    /// The mesh branch's landmark term, 0 without one.
    pub mesh_landmarks: f32,
    pub positives: usize,
    /// Whether `total` depends on a trained parameter (not so for a network whose detection
    /// layers are frozen, in a batch without an anchor for the mesh branch).
    pub trainable: bool,
}

/// OHEM: per image, the `ratio · positives` background anchors with the highest loss
/// (ignored anchors never count). Returns a 0/1 mask of the anchors the class loss sees.
pub fn hard_negative_mask(background_loss: &[f32], labels: &[i8], ratio: f32) -> Vec<f32> {
    let positives = labels.iter().filter(|&&l| l == 1).count();
    let mut negatives: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == 0).collect();
    let keep = ((ratio * positives as f32) as usize).min(negatives.len());
    // Highest loss first; ties by index so the choice is deterministic.
    negatives.sort_unstable_by(|&a, &b| {
        background_loss[b]
            .total_cmp(&background_loss[a])
            .then(a.cmp(&b))
    });
    let mut mask: Vec<f32> = labels.iter().map(|&l| f32::from(l == 1)).collect();
    for &i in &negatives[..keep] {
        mask[i] = 1.0;
    }
    mask
}

/// `0.5 x²` for |x| < 1, `|x| − 0.5` beyond (β = 1).
fn smooth_l1<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let a = x.abs();
    let m = a.clone().clamp_max(1.0);
    m.clone() * m.clone() * 0.5 + (a - m)
}

/// The loss of `out` against per-image `targets`.
pub fn multibox_loss(out: &HeadOutput, targets: &[Targets], config: &LossConfig) -> Loss {
    let [b, n, _] = out.class.dims();
    let device = out.class.device();
    let flat =
        |f: &dyn Fn(&Targets) -> Vec<f32>| -> Vec<f32> { targets.iter().flat_map(f).collect() };
    let is_face = flat(&|t| t.labels.iter().map(|&l| f32::from(l == 1)).collect());
    let positives = is_face.iter().filter(|&&v| v > 0.0).count();
    let np = positives.max(1) as f32;
    let y: Tensor<2> = tensor(is_face, vec![b, n], &device);

    // The class term, and the per-anchor weight and divisor of the box term.
    let (class, box_weight, box_divisor) = match config.classification {
        Classification::CrossEntropy => {
            let class = ohem_cross_entropy(out, targets, y.clone(), config) / np;
            (class, y.clone(), np)
        }
        Classification::Focal => {
            let norm = per_level_normaliser(&out.levels, targets, n);
            let valid = flat(&|t| t.labels.iter().map(|&l| f32::from(l >= 0)).collect());
            let weight: Vec<f32> = valid.iter().zip(&norm).map(|(v, w)| v * w).collect();
            let weight: Tensor<2> = tensor(weight, vec![b, n], &device);
            let z = face_logit(&out.class);
            let class =
                (focal_loss(z, y.clone(), config.focal_alpha, config.focal_gamma) * weight).sum();
            let norm: Tensor<2> = tensor(norm, vec![b, n], &device);
            (class, y.clone() * norm, 1.0)
        }
    };

    let box_t: Tensor<3> = tensor(flat(&|t| t.boxes.clone()), vec![b, n, 4], &device);
    let boxes =
        (smooth_l1(out.boxes.clone() - box_t) * box_weight.reshape([b, n, 1])).sum() / box_divisor;

    let with_landmarks = targets
        .iter()
        .map(|t| t.landmark_mask.iter().filter(|&&v| v > 0.0).count())
        .sum::<usize>();
    let nl = with_landmarks.max(1) as f32;
    let lm_mask: Tensor<3> = tensor(flat(&|t| t.landmark_mask.clone()), vec![b, n, 1], &device);
    let lm_t: Tensor<3> = tensor(flat(&|t| t.landmarks.clone()), vec![b, n, 10], &device);
    let landmarks = match &out.landmarks {
        Some(l) => (smooth_l1(l.clone() - lm_t) * lm_mask).sum() / nl,
        None => Tensor::zeros([1], &device),
    };

    let segmentation = segmentation_loss(&out.segmentation, targets);

    let scalar = |t: &Tensor<1>| t.clone().detach().into_scalar::<f32>();
    let (c, bx, lm) = (scalar(&class), scalar(&boxes), scalar(&landmarks));
    let mut total = class + boxes * config.box_weight + landmarks * config.landmark_weight;
    let mut seg = 0.0;
    if let Some(s) = segmentation {
        seg = scalar(&s);
        total = total + s * config.segmentation_weight;
    }
    Loss {
        total,
        class: c,
        boxes: bx,
        landmarks: lm,
        segmentation: seg,
        mesh: 0.0,
        mesh_landmarks: 0.0,
        positives,
        trainable: true,
    }
}

/// The face logit of every anchor, `[B, N]`: the sigmoid head's one logit, or for a softmax
/// head the difference of its two (whose sigmoid is the softmax's face probability).
fn face_logit(class: &Tensor<3>) -> Tensor<2> {
    let [b, n, s] = class.dims();
    if s == 1 {
        class.clone().reshape([b, n])
    } else {
        (class.clone().narrow(2, 1, 1) - class.clone().narrow(2, 0, 1)).reshape([b, n])
    }
}

/// Cross-entropy summed over the faces and the hardest negatives (OHEM), not yet normalised.
fn ohem_cross_entropy(
    out: &HeadOutput,
    targets: &[Targets],
    y: Tensor<2>,
    config: &LossConfig,
) -> Tensor<1> {
    let [b, n, _] = out.class.dims();
    let device = out.class.device();
    // Softmax heads: log p from two logits; sigmoid heads: log σ(±z) of one.
    let (lp_bg, lp_face): (Tensor<2>, Tensor<2>) = match out.class.dims()[2] {
        1 => {
            let z: Tensor<2> = out.class.clone().reshape([b, n]);
            (log_sigmoid(z.clone().neg()), log_sigmoid(z))
        }
        _ => {
            let logp = log_softmax(out.class.clone(), 2);
            (
                logp.clone().narrow(2, 0, 1).reshape([b, n]),
                logp.narrow(2, 1, 1).reshape([b, n]),
            )
        }
    };
    // OHEM on the host from the detached background loss.
    let bg_loss: Vec<f32> = lp_bg
        .clone()
        .detach()
        .neg()
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap_or_else(|_| vec![0.0; b * n]);
    let mut selected = Vec::with_capacity(b * n);
    for (i, t) in targets.iter().enumerate() {
        selected.extend(hard_negative_mask(
            &bg_loss[i * n..(i + 1) * n],
            &t.labels,
            config.negatives_per_positive,
        ));
    }
    let sel: Tensor<2> = tensor(selected, vec![b, n], &device);
    // −log p(label) = −(lp_bg + y · (lp_face − lp_bg)).
    let ce = (lp_bg.clone() + y * (lp_face - lp_bg)).neg();
    (ce * sel).sum()
}

/// Sigmoid focal loss of logits `z` against 0/1 labels `y`, per anchor:
/// `−α (1 − p)^γ log p` for faces, `−(1 − α) p^γ log(1 − p)` for background, `p = σ(z)`.
/// The powers are taken as `exp(γ · log σ(∓z))`, finite for any logit.
pub fn focal_loss(z: Tensor<2>, y: Tensor<2>, alpha: f32, gamma: f32) -> Tensor<2> {
    let log_p = log_sigmoid(z.clone());
    let log_q = log_sigmoid(z.neg());
    let face = (log_q.clone() * gamma).exp() * log_p.clone() * (-alpha);
    let background = (log_p * gamma).exp() * log_q * (alpha - 1.0);
    background.clone() + y * (face - background)
}

/// `1 / N_k` for every anchor of the batch, `N_k` the face anchors of the batch on the
/// anchor's level (SPEC §2's per-level normalisation). A level without face anchors is
/// normalised by the face anchors of the whole batch (RetinaNet's normaliser; at least 1),
/// not by 1: each of its thousands of background anchors would otherwise weigh as much as
/// all the faces of another level together.
fn per_level_normaliser(levels: &[usize], targets: &[Targets], n: usize) -> Vec<f32> {
    let faces_in = |range: std::ops::Range<usize>| -> usize {
        targets
            .iter()
            .map(|t| t.labels[range.clone()].iter().filter(|&&l| l == 1).count())
            .sum()
    };
    let all = faces_in(0..n).max(1);
    let mut per_anchor = vec![0.0f32; n];
    let mut first = 0;
    for &count in levels {
        let end = (first + count).min(n);
        let faces = match faces_in(first..end) {
            0 => all,
            k => k,
        };
        per_anchor[first..end].fill(1.0 / faces as f32);
        first = end;
    }
    targets
        .iter()
        .flat_map(|_| per_anchor.iter().copied())
        .collect()
}

/// DF²S²'s segmentation term: per level, the mean per-pixel sigmoid cross-entropy of the
/// logits against the box-level masks, summed over levels. `None` when the network gave no
/// logits or the targets carry no masks.
fn segmentation_loss(logits: &[Tensor<4>], targets: &[Targets]) -> Option<Tensor<1>> {
    if logits.is_empty() || targets.iter().any(|t| t.masks.len() != logits.len()) {
        return None;
    }
    let mut total: Option<Tensor<1>> = None;
    for (k, z) in logits.iter().enumerate() {
        let [b, _, h, w] = z.dims();
        let mask: Vec<f32> = targets
            .iter()
            .flat_map(|t| t.masks[k].iter().copied())
            .collect();
        let m: Tensor<2> = tensor(mask, vec![b, h * w], &z.device());
        let z: Tensor<2> = z.clone().reshape([b, h * w]);
        let log_bg = log_sigmoid(z.clone().neg());
        // −[m log σ(z) + (1 − m) log σ(−z)].
        let bce = (log_bg.clone() + m * (log_sigmoid(z) - log_bg)).neg();
        let level = bce.mean();
        total = Some(match total {
            Some(t) => t + level,
            None => level,
        });
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn ohem_keeps_three_hardest_negatives_per_positive_and_never_ignored_anchors() {
        // 2 faces, 3 ignored, 10 background anchors with losses 0.0 … 0.9.
        let mut labels = vec![1i8, 1, -1, -1, -1];
        labels.extend([0i8; 10]);
        let mut loss = vec![5.0; 5]; // ignored anchors are "hard" but must not be picked
        loss.extend((0..10).map(|i| i as f32 / 10.0));
        let mask = hard_negative_mask(&loss, &labels, 3.0);
        assert_eq!(&mask[..5], &[1.0, 1.0, 0.0, 0.0, 0.0]);
        let chosen: Vec<usize> = (5..15).filter(|&i| mask[i] > 0.0).collect();
        assert_eq!(chosen, [9, 10, 11, 12, 13, 14]);
        assert_eq!(mask.iter().sum::<f32>(), 8.0); // 2 + 3·2
                                                   // Fewer negatives than 3:1 asks for: all of them.
        assert_eq!(
            hard_negative_mask(&[1.0, 0.5, 0.2], &[1, 0, 0], 3.0),
            [1.0, 1.0, 1.0]
        );
        // No face: no negative either (the port's rule).
        assert_eq!(hard_negative_mask(&[1.0, 0.5], &[0, 0], 3.0), [0.0, 0.0]);
    }

    #[test]
    fn loss_on_a_tiny_case_equals_the_hand_computed_value() {
        let device = Device::flex();
        // Three anchors: a face (logits 0, 0) and two background ones (1, 0) and (0, 2).
        let out = HeadOutput {
            mesh: None,
            class: tensor(vec![0.0, 0.0, 1.0, 0.0, 0.0, 2.0], vec![1, 3, 2], &device),
            boxes: tensor(
                [[0.5, -2.0, 0.0, 0.0], [9.0; 4], [9.0; 4]].concat(),
                vec![1, 3, 4],
                &device,
            ),
            landmarks: Some(tensor(
                [vec![0.2; 10], vec![9.0; 20]].concat(),
                vec![1, 3, 10],
                &device,
            )),
            segmentation: Vec::new(),
            levels: vec![3],
        };
        let t = Targets {
            labels: vec![1, 0, 0],
            boxes: vec![0.0; 12],
            landmarks: vec![0.0; 30],
            landmark_mask: vec![1.0, 0.0, 0.0],
            masks: Vec::new(),
            positive_iou: vec![(0, 0.8)],
        };
        let config = LossConfig {
            negatives_per_positive: 1.0,
            ..LossConfig::port()
        };
        let l = multibox_loss(&out, &[t], &config);
        // Class: face −log ½ = 0.693147; OHEM keeps the harder negative (0, 2):
        // −log(1 / (1 + e²)) = 2.126928. One positive.
        let class = 2f32.ln() + (1.0 + 2f32.exp()).ln();
        // Boxes: smooth-L1(0.5) + smooth-L1(−2) = 0.125 + 1.5; landmarks 10 · ½ · 0.2².
        let (boxes, landmarks) = (1.625, 0.2);
        assert!((l.class - class).abs() < 1e-5, "{} vs {class}", l.class);
        assert!((l.boxes - boxes).abs() < 1e-5, "{}", l.boxes);
        assert!((l.landmarks - landmarks).abs() < 1e-5, "{}", l.landmarks);
        let total = l.total.into_scalar::<f32>();
        assert!(
            (total - (class + 2.0 * boxes + landmarks)).abs() < 1e-5,
            "{total}"
        );
        assert_eq!(l.positives, 1);
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec().unwrap()
    }

    #[test]
    fn focal_loss_equals_the_hand_computed_value_and_half_cross_entropy_at_gamma_0() {
        let device = Device::flex();
        let z = tensor(vec![2.0, -1.0, 0.5, -3.0], vec![1, 4], &device);
        let y = tensor(vec![1.0, 1.0, 0.0, 0.0], vec![1, 4], &device);
        let got = values(focal_loss(z.clone(), y.clone(), 0.25, 2.0));
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        let want: Vec<f64> = [(2.0, true), (-1.0, true), (0.5, false), (-3.0, false)]
            .iter()
            .map(|&(z, face)| {
                let p = sigmoid(z);
                if face {
                    -0.25 * (1.0 - p).powi(2) * p.ln()
                } else {
                    -0.75 * p.powi(2) * (1.0 - p).ln()
                }
            })
            .collect();
        // By hand for z = 2, a face: p = 0.880797, −0.25 · 0.119203² · ln p = 0.000451.
        assert!((want[0] - 0.000451).abs() < 1e-6, "{}", want[0]);
        for (g, w) in got.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{g} vs {w}");
        }
        // γ = 0, α = ½: half the binary cross-entropy.
        let half = values(focal_loss(z, y, 0.5, 0.0));
        for (i, (z, face)) in [(2.0, true), (-1.0, true), (0.5, false), (-3.0, false)]
            .into_iter()
            .enumerate()
        {
            let p = sigmoid(z);
            let ce = if face { -p.ln() } else { -(1.0 - p).ln() };
            assert!((f64::from(half[i]) - 0.5 * ce).abs() < 1e-6);
        }
        // Finite at logits far out on either side: a confident mistake costs (1 − α)·|z| or
        // α·|z|.
        let far = tensor(vec![80.0, -80.0], vec![1, 2], &device);
        let y = tensor(vec![0.0, 1.0], vec![1, 2], &device);
        let v = values(focal_loss(far, y, 0.25, 2.0));
        assert!(
            (v[0] - 60.0).abs() < 1e-3 && (v[1] - 20.0).abs() < 1e-3,
            "{v:?}"
        );
    }

    #[test]
    fn focal_recipe_normalises_per_level_and_adds_the_segmentation_term() {
        let device = Device::flex();
        // Two levels: 4 anchors (two faces, one ignored) and 2 anchors (no face).
        let logits = vec![1.0, 0.0, 0.3, -2.0, 0.5, -1.0];
        let mut boxes = vec![0.5, 0.0, 0.0, 0.0];
        boxes.extend([0.0; 4]);
        boxes.extend([3.0; 16]);
        let out = HeadOutput {
            mesh: None,
            class: tensor(logits, vec![1, 6, 1], &device),
            boxes: tensor(boxes, vec![1, 6, 4], &device),
            landmarks: None,
            // One level of 1×2 logits (0, 2) for a mask (1, 0).
            segmentation: vec![tensor(vec![0.0, 2.0], vec![1, 1, 1, 2], &device)],
            levels: vec![4, 2],
        };
        let t = Targets {
            labels: vec![1, 1, -1, 0, 0, 0],
            boxes: vec![0.0; 24],
            landmarks: vec![0.0; 60],
            landmark_mask: vec![0.0; 6],
            masks: vec![vec![1.0, 0.0]],
            positive_iou: vec![(0, 0.6), (1, 0.7)],
        };
        let config = LossConfig {
            segmentation_weight: 0.5,
            ..LossConfig::df2s2()
        };
        let l = multibox_loss(&out, &[t], &config);
        let fl = |z: f64, face: bool| {
            let p = 1.0 / (1.0 + (-z).exp());
            if face {
                -0.25 * (1.0 - p).powi(2) * p.ln()
            } else {
                -0.75 * p.powi(2) * (1.0 - p).ln()
            }
        };
        // Level 0: two faces, N = 2; the ignored anchor does not count. Level 1 has no face:
        // it is normalised by the faces of the batch, 2.
        let class = (fl(1.0, true) + fl(0.0, true) + fl(-2.0, false)) / 2.0
            + (fl(0.5, false) + fl(-1.0, false)) / 2.0;
        assert!(
            (f64::from(l.class) - class).abs() < 1e-6,
            "{} vs {class}",
            l.class
        );
        assert!((l.boxes - 0.0625).abs() < 1e-6, "{}", l.boxes);
        // Segmentation: mean of −log σ(0) and −log(1 − σ(2)).
        let seg = (2f64.ln() + (1.0 + 2f64.exp()).ln()) / 2.0;
        assert!(
            (f64::from(l.segmentation) - seg).abs() < 1e-6,
            "{}",
            l.segmentation
        );
        let total = l.total.into_scalar::<f32>();
        let want = class + 0.0625 + 0.5 * seg;
        assert!((f64::from(total) - want).abs() < 1e-5, "{total} vs {want}");
    }
}
