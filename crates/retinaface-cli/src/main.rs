//! The `retinaface` command line: detect, convert, bench, eval, align, anonymize, train, serve.

mod budget;
mod commands;
mod files;
mod mask;
mod model;
mod output;
mod progress;
mod video;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "retinaface",
    version,
    about = "RetinaFace face detection in pure Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect faces in photos (files or folders, recursive).
    Detect(commands::detect::Args),
    /// Convert weights (ONNX, PyTorch .pth, safetensors) to our safetensors.
    Convert(commands::convert::Args),
    /// Measure the forward pass and the whole detection per input size.
    Bench(commands::bench::Args),
    /// Evaluate: WIDER FACE AP with PR curves, landmark NME / failure rate / CED.
    Eval(commands::eval::Args),
    /// ArcFace-aligned crops of every face, for face recognition.
    Align(commands::align::Args),
    /// Blur, pixelate or fill the faces of photos and videos.
    Anonymize(commands::anonymize::Args),
    /// Train RetinaFace (CPU, or CUDA in builds with the `cuda` feature).
    #[cfg(feature = "train")]
    Train(commands::train::Args),
    /// Serve detection, alignment and anonymisation over HTTP, with a web page.
    #[cfg(feature = "serve")]
    Serve(commands::serve::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Detect(a) => commands::detect::run(a),
        Command::Convert(a) => commands::convert::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Align(a) => commands::align::run(a),
        Command::Anonymize(a) => commands::anonymize::run(a),
        #[cfg(feature = "train")]
        Command::Train(a) => commands::train::run(a),
        #[cfg(feature = "serve")]
        Command::Serve(a) => commands::serve::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::from(2)
        }
    }
}

/// An error with its causes, each said once: the library's errors already name their cause in
/// their message (`path: reason`), so a cause whose text is already there is left out.
pub fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}
