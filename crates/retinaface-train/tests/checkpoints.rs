//! Damaged checkpoint files are errors of that file, never a panic: the fuzz campaign's
//! findings (fuzz/regressions/checkpoint/) and hand-made damage of a real record.

use burn::optim::SgdConfig;
use retinaface_train::checkpoint::{self, CheckpointError};
use std::path::Path;

/// The checkpoint target's framing: len(state) u16, len(model) u32, then the three files.
fn parts(data: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let state_len = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let model_len = u32::from_le_bytes([data[2], data[3], data[4], data[5]]) as usize;
    let rest = &data[6..];
    let (state, rest) = rest.split_at(state_len.min(rest.len()));
    let (model, optim) = rest.split_at(model_len.min(rest.len()));
    (state, model, optim)
}

#[test]
fn fuzz_findings_are_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/checkpoint");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let (_, model, optim) = parts(&data);
        // Each finding made burn panic in one of the two records: that one is now an error
        // (a caught panic while burn 0.22 has the bug).
        let model = checkpoint::parse_model(model.to_vec());
        let optim = checkpoint::load_optimizer(optim.to_vec(), SgdConfig::new().init());
        assert!(
            model.is_err() || optim.is_err(),
            "a damaged checkpoint loaded"
        );
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn every_truncation_of_a_real_record_is_an_error() {
    let seed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/checkpoint/small"),
    )
    .unwrap();
    let (state, model, optim) = parts(&seed);
    assert!(checkpoint::parse_state(state).is_ok());
    assert!(checkpoint::parse_model(model.to_vec()).is_ok());
    assert!(checkpoint::load_optimizer(optim.to_vec(), SgdConfig::new().init()).is_ok());
    for cut in (0..optim.len()).step_by(7) {
        let r = checkpoint::load_optimizer(optim[..cut].to_vec(), SgdConfig::new().init());
        assert!(
            r.is_err(),
            "a record cut at {cut} of {} loaded",
            optim.len()
        );
    }
    for cut in (0..model.len()).step_by(7) {
        assert!(checkpoint::parse_model(model[..cut].to_vec()).is_err());
    }
    assert!(matches!(
        checkpoint::parse_state(b"{\"step\": -1}"),
        Err(CheckpointError::Invalid(_))
    ));
}
