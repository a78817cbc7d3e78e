//! The WIDER Face Challenge metric: the protocol's AP averaged over a range of IoU thresholds
//! (0.50, 0.55, …, 0.95; SPEC §3), each computed exactly as [`evaluate`] computes one.

use super::eval::{evaluate, EvalOptions};
use super::{GroundTruth, Predictions, Setting, WiderError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// IoU thresholds to evaluate at: one, or an evenly spaced range.
///
/// Thresholds are kept in thousandths, so `0.5:0.95` gives exactly the doubles that the
/// literals `0.55`, `0.6`, … parse to, and each matches `wider_eval.py --iou T` bit for bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IouThresholds {
    milli: Vec<u32>,
    range: bool,
}

impl IouThresholds {
    /// Parse `T` (one threshold), `A:B` (A to B in steps of 0.05) or `A:B:S`, each in [0, 1]
    /// with at most three decimals.
    pub fn parse(text: &str) -> Result<Self, WiderError> {
        let bad = |why: &str| WiderError::InvalidOption(format!("--iou {text}: {why}"));
        let milli = |s: &str| -> Result<u32, WiderError> {
            let v: f64 = s
                .trim()
                .parse()
                .map_err(|_| bad(&format!("`{s}` is not a number")))?;
            if !(0.0..=1.0).contains(&v) {
                return Err(bad("thresholds lie in [0, 1]"));
            }
            let m = (v * 1000.0).round();
            if (m / 1000.0 - v).abs() > 1e-9 {
                return Err(bad("thresholds have at most three decimals"));
            }
            Ok(m as u32)
        };
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            [one] => Ok(IouThresholds {
                milli: vec![milli(one)?],
                range: false,
            }),
            [a, b] | [a, b, _] => {
                let (a, b) = (milli(a)?, milli(b)?);
                let step = match parts.get(2) {
                    Some(s) => milli(s)?,
                    None => 50,
                };
                if step == 0 || b < a {
                    return Err(bad("a range A:B[:S] needs A ≤ B and a step S > 0"));
                }
                let milli: Vec<u32> = (0..)
                    .map(|i| a + i * step)
                    .take_while(|&t| t <= b)
                    .collect();
                Ok(IouThresholds { milli, range: true })
            }
            _ => Err(bad("give T, A:B or A:B:S")),
        }
    }

    /// The thresholds in ascending order.
    pub fn values(&self) -> Vec<f64> {
        self.milli.iter().map(|&m| f64::from(m) / 1000.0).collect()
    }

    /// Whether this was given as a range (the output then reports each threshold).
    pub fn is_range(&self) -> bool {
        self.range
    }
}

impl fmt::Display for IouThresholds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.values();
        match (self.range, v.first(), v.last()) {
            (true, Some(a), Some(b)) => write!(f, "{a:.2}:{b:.2}"),
            (_, Some(a), _) => write!(f, "{a}"),
            _ => Ok(()),
        }
    }
}

/// One setting over a range of thresholds. Serialises as `{"ap", "faces", "images",
/// "per_iou": {"0.50": ap, …}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RangeSettingReport {
    /// The mean of the per-threshold APs.
    pub ap: f64,
    /// Faces that count (as [`super::SettingReport::faces`]).
    pub faces: usize,
    /// Images evaluated.
    pub images: usize,
    /// AP at each threshold, keyed by the threshold with two decimals.
    pub per_iou: BTreeMap<String, f64>,
}

/// The three settings over a range of thresholds, in the order of [`super::EvalReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RangeReport {
    /// Easy setting.
    pub easy: RangeSettingReport,
    /// Medium setting.
    pub medium: RangeSettingReport,
    /// Hard setting.
    pub hard: RangeSettingReport,
}

impl RangeReport {
    /// The report of one setting.
    pub fn get(&self, setting: Setting) -> &RangeSettingReport {
        setting.pick(&self.easy, &self.medium, &self.hard)
    }

    /// One line of compact JSON.
    pub fn to_json(&self) -> String {
        // Maps of strings to numbers always serialise; the fallback is unreachable.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The mean AP per setting, then one row per threshold.
    pub fn to_text(&self, thresholds: &IouThresholds) -> String {
        let mut out = String::new();
        for s in Setting::ALL {
            let r = self.get(s);
            out += &format!(
                "{:<6} mAP {:.4} at IoU {thresholds}  ({} faces in {} images)\n",
                s.name(),
                r.ap,
                r.faces,
                r.images
            );
        }
        out += "IoU    easy    medium  hard\n";
        for key in self.easy.per_iou.keys() {
            let ap = |s: Setting| self.get(s).per_iou.get(key).copied().unwrap_or(f64::NAN);
            out += &format!(
                "{key}   {:.4}  {:.4}  {:.4}\n",
                ap(Setting::Easy),
                ap(Setting::Medium),
                ap(Setting::Hard)
            );
        }
        out
    }
}

/// Evaluates the three settings at every threshold of `thresholds` (`opts.iou_threshold` is
/// ignored) and averages the APs.
pub fn evaluate_range(
    gt: &GroundTruth,
    preds: &Predictions,
    opts: &EvalOptions,
    thresholds: &IouThresholds,
) -> Result<RangeReport, WiderError> {
    let values = thresholds.values();
    if values.is_empty() {
        return Err(WiderError::InvalidOption(
            "no IoU threshold to evaluate".into(),
        ));
    }
    let mut per: [RangeSettingReport; 3] = std::array::from_fn(|_| RangeSettingReport {
        ap: 0.0,
        faces: 0,
        images: 0,
        per_iou: BTreeMap::new(),
    });
    for &t in &values {
        let o = EvalOptions {
            iou_threshold: t,
            ..opts.clone()
        };
        let report = evaluate(gt, preds, &o)?;
        for (k, s) in Setting::ALL.into_iter().enumerate() {
            let r = report.get(s);
            per[k].per_iou.insert(format!("{t:.2}"), r.ap);
            per[k].faces = r.faces;
            per[k].images = r.images;
        }
    }
    for p in &mut per {
        p.ap = p.per_iou.values().sum::<f64>() / values.len() as f64;
    }
    let [easy, medium, hard] = per;
    Ok(RangeReport { easy, medium, hard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_as_the_literals_do() {
        let r = IouThresholds::parse("0.5:0.95").unwrap();
        let v = r.values();
        assert_eq!(v.len(), 10);
        let literals = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];
        for (a, b) in v.iter().zip(literals) {
            assert_eq!(a.to_bits(), f64::to_bits(b), "{a} vs {b}");
        }
        assert!(r.is_range());
        assert_eq!(r.to_string(), "0.50:0.95");
        let one = IouThresholds::parse("0.7").unwrap();
        assert_eq!((one.values(), one.is_range()), (vec![0.7], false));
        assert_eq!(
            IouThresholds::parse("0.5:0.6:0.1").unwrap().values(),
            [0.5, 0.6]
        );
        for bad in [
            "",
            "x",
            "1.5",
            "0.9:0.5",
            "0.5:0.9:0",
            "0.1234",
            "0.5:0.6:0.1:2",
            "-0.1",
        ] {
            assert!(IouThresholds::parse(bad).is_err(), "{bad}");
        }
    }
}
