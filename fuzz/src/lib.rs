//! What the fuzz targets share: each target feeds its bytes to one parser through the same
//! functions the binary calls, and turns every *caught* panic back into a crash so that the
//! fuzzer records it (the user never sees one; the campaign must).

use retinaface::error::WeightsError;
use retinaface::weights::NamedTensors;
use retinaface::Detector;
use std::path::Path;

/// The pixel limit of the image target: small, so one execution stays fast and a header
/// claiming a huge image exercises the refusal path.
pub const MAX_PIXELS: u64 = 1 << 20;

/// A fixed name for the errors.
pub fn name() -> &'static Path {
    Path::new("fuzz-input")
}

/// Weights parsed by one format's reader go on as a loaded file does: the configuration
/// inferred from the names, then the network built from the tensors (shapes checked).
pub fn build_network(parsed: Result<NamedTensors, WeightsError>) {
    let Ok(tensors) = parsed else { return };
    let config = retinaface::weights::infer_config(&tensors);
    let _ = Detector::new(&config, &tensors);
}

/// Text inputs: the parsers take `&str`; invalid UTF-8 is refused by the binary before them.
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Panics of dependencies that the campaign already found, reported and turned into regression
/// tests (fuzz/regressions/, fuzz/README.md): our guards catch them, and the campaign goes on
/// looking for new ones instead of stopping at these again.
pub const KNOWN_UPSTREAM_PANICS: &[&str] = &[
    // burn-optim 0.22.1, ModuleOptimizer::load_record: `expect` on a record tensor whose
    // parameter id is absent (a damaged optim.bpk).
    "Optimizer record tensors should carry a parameter id",
    // burn-optim 0.22.1: an optimiser state tensor of a rank the state cannot hold.
    "Unsupported tensor rank for optimizer state",
    // burn-tensor 0.22.1, TensorData checks on loading: a record tensor whose rank and
    // dimensions disagree ("Tried to create a 0-dim tensor").
    "Tensor Operation Error",
];

/// A panic that a guard caught: a crash for the fuzzer unless it is a known upstream one.
pub fn caught_panic(what: &str, message: &str) {
    if !KNOWN_UPSTREAM_PANICS.iter().any(|k| message.contains(k)) {
        panic!("{what} panicked: {message}");
    }
}
