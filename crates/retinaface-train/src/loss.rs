//! The multi-task loss (SPEC §1.5): softmax cross-entropy over faces and the hardest
//! negatives (OHEM), smooth-L1 on boxes of face anchors and on landmarks of face anchors whose
//! face has them, each normalised by its anchor count, then weighted.

use crate::matching::Targets;
use crate::network::{tensor, HeadOutput};
use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Loss weights and OHEM.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// λ for the box term (the paper 0.25, the port 2.0).
    pub box_weight: f32,
    /// λ for the landmark term (the paper 0.1, the port 1.0).
    pub landmark_weight: f32,
    /// Hard negatives kept per positive anchor (3).
    pub negatives_per_positive: f32,
}

impl LossConfig {
    pub fn port() -> Self {
        LossConfig {
            box_weight: 2.0,
            landmark_weight: 1.0,
            negatives_per_positive: 3.0,
        }
    }

    pub fn paper() -> Self {
        LossConfig {
            box_weight: 0.25,
            landmark_weight: 0.1,
            negatives_per_positive: 3.0,
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
    pub positives: usize,
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
    // Softmax heads: log p from two logits; sigmoid heads (DF²S²): log σ(±z) of one. (DF²S²'s
    // focal loss replaces this cross-entropy in its own recipe.)
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

    let flat =
        |f: &dyn Fn(&Targets) -> Vec<f32>| -> Vec<f32> { targets.iter().flat_map(f).collect() };
    let is_face = flat(&|t| t.labels.iter().map(|&l| f32::from(l == 1)).collect());
    let y: Tensor<2> = tensor(is_face.clone(), vec![b, n], &device);

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

    let positives = is_face.iter().filter(|&&v| v > 0.0).count();
    let with_landmarks = targets
        .iter()
        .map(|t| t.landmark_mask.iter().filter(|&&v| v > 0.0).count())
        .sum::<usize>();
    let np = positives.max(1) as f32;
    let nl = with_landmarks.max(1) as f32;

    // −log p(label) = −(lp_bg + y · (lp_face − lp_bg)).
    let ce = (lp_bg.clone() + y.clone() * (lp_face - lp_bg)).neg();
    let class = (ce * sel).sum() / np;

    let pos3: Tensor<3> = y.reshape([b, n, 1]);
    let box_t: Tensor<3> = tensor(flat(&|t| t.boxes.clone()), vec![b, n, 4], &device);
    let boxes = (smooth_l1(out.boxes.clone() - box_t) * pos3).sum() / np;

    let lm_mask: Tensor<3> = tensor(flat(&|t| t.landmark_mask.clone()), vec![b, n, 1], &device);
    let lm_t: Tensor<3> = tensor(flat(&|t| t.landmarks.clone()), vec![b, n, 10], &device);
    let landmarks = match &out.landmarks {
        Some(l) => (smooth_l1(l.clone() - lm_t) * lm_mask).sum() / nl,
        None => Tensor::zeros([1], &device),
    };

    let scalar = |t: &Tensor<1>| t.clone().detach().into_scalar::<f32>();
    let (c, bx, lm) = (scalar(&class), scalar(&boxes), scalar(&landmarks));
    let total = class + boxes * config.box_weight + landmarks * config.landmark_weight;
    Loss {
        total,
        class: c,
        boxes: bx,
        landmarks: lm,
        positives,
    }
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
        };
        let t = Targets {
            labels: vec![1, 0, 0],
            boxes: vec![0.0; 12],
            landmarks: vec![0.0; 30],
            landmark_mask: vec![1.0, 0.0, 0.0],
        };
        let config = LossConfig {
            box_weight: 2.0,
            landmark_weight: 1.0,
            negatives_per_positive: 1.0,
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
}
