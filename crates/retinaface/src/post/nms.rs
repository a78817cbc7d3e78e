//! Greedy non-maximum suppression with the port's +1-pixel area convention.

use super::Face;

/// IoU with the +1-pixel convention (`area = (x2 − x1 + 1)(y2 − y1 + 1)`).
#[inline]
pub fn iou_plus1(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0] + 1.0) * (r[3] - r[1] + 1.0);
    inter / (area(a) + area(b) - inter)
}

/// Keep the best face, drop those overlapping it by more than `threshold`, repeat; at most
/// `keep` faces. `faces` must be sorted by descending score.
pub fn nms(faces: &[Face], threshold: f32, keep: usize) -> Vec<Face> {
    nms_indices(faces, threshold, keep)
        .into_iter()
        .map(|i| faces[i])
        .collect()
}

/// As [`nms`], the indices of the faces kept.
pub fn nms_indices(faces: &[Face], threshold: f32, keep: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut suppressed = vec![false; faces.len()];
    for i in 0..faces.len() {
        if out.len() >= keep {
            break;
        }
        if suppressed[i] {
            continue;
        }
        out.push(i);
        for j in i + 1..faces.len() {
            if !suppressed[j] && iou_plus1(&faces[i].bbox, &faces[j].bbox) > threshold {
                suppressed[j] = true;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(b: [f32; 4], s: f32) -> Face {
        Face {
            bbox: b,
            score: s,
            landmarks: None,
        }
    }

    #[test]
    fn suppresses_overlaps_and_keeps_distinct() {
        let faces = [
            f([0.0, 0.0, 9.0, 9.0], 0.9),
            f([1.0, 1.0, 10.0, 10.0], 0.8),
            f([20.0, 20.0, 29.0, 29.0], 0.7),
        ];
        let kept = nms(&faces, 0.4, 750);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].score, 0.7);
        // +1 convention: identical 0-width boxes overlap fully.
        assert_eq!(iou_plus1(&[5.0, 5.0, 5.0, 5.0], &[5.0, 5.0, 5.0, 5.0]), 1.0);
        assert_eq!(nms(&faces, 0.4, 1).len(), 1);
    }
}
