//! Memory admitted to photos in flight: a batch runs several photos at once (one thread
//! each), and large photos must not all be decoded at the same time. Photos are grouped in
//! waves whose estimated cost fits the budget (a photo larger than the budget runs alone);
//! each wave runs in parallel. Grouping before entering the thread pool, rather than waiting
//! inside it, cannot deadlock with the pool's nested work.

use std::path::Path;

/// Bytes of photos in flight at once (with the detector's retained buffers, at most 400 MB,
/// this keeps a batch under the README's bound).
pub const IN_FLIGHT_BYTES: u64 = 600 << 20;

/// Bytes per pixel of a network pass, measured: a 2000 × 2000 pass takes about 135 MB.
const PASS_BYTES_PER_PIXEL: u64 = 34;

/// Estimated peak bytes of detecting one photo: the file, the decoded image (at most 4 bytes
/// per pixel), its RGB copy, and the pass at `max_side`. Unreadable headers count the file
/// only (decoding will fail).
pub fn photo_cost(path: &Path, max_side: Option<u32>) -> u64 {
    let file = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let dims = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .ok()
        .and_then(|r| r.into_dimensions().ok());
    let Some((w, h)) = dims else {
        return file;
    };
    let pixels = u64::from(w) * u64::from(h);
    let long = u64::from(w.max(h)).max(1);
    let pass = match max_side {
        Some(side) if long > u64::from(side) => pixels * u64::from(side).pow(2) / (long * long),
        _ => pixels,
    };
    file + 7 * pixels + PASS_BYTES_PER_PIXEL * pass
}

/// Consecutive groups of indices whose summed cost stays within `budget` (each at least one).
pub fn waves(costs: &[u64], budget: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut sum) = (0, 0u64);
    for (i, &c) in costs.iter().enumerate() {
        if i > start && sum + c > budget {
            out.push(start..i);
            start = i;
            sum = 0;
        }
        sum += c;
    }
    if start < costs.len() {
        out.push(start..costs.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_fit_the_budget_and_cover_everything() {
        assert_eq!(waves(&[], 10), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(waves(&[3, 3, 3, 3], 10), vec![0..3, 3..4]);
        assert_eq!(waves(&[20, 1, 1, 20], 10), vec![0..1, 1..3, 3..4]);
        assert_eq!(waves(&[5, 5], 10), vec![0..2]);
    }
}
