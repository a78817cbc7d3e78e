//! Progress bars on standard error, for runs of more than one item.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for `n` items, hidden for a single item or when stderr is not a terminal.
pub fn bar(n: usize, what: &str) -> ProgressBar {
    if n <= 1 {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(n as u64);
    let style = ProgressStyle::with_template(&format!(
        "{{bar:40}} {{pos}}/{{len}} {what} {{per_sec}} eta {{eta}} {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}
