//! Renders a person in new poses with GFLA.
//!
//! ```sh
//! cargo run --release --example pose_transfer            # the embedded demo
//! cargo run --release --example pose_transfer -- \
//!     --source person.jpg --source-pose person.json --target-pose poses/ \
//!     --weights latest_net_G.pth --preset market --visualize vis/
//! ```
//!
//! `--help` lists every option; the engine is `gfla::pose_transfer`.

use std::time::Instant;

use clap::Parser;
use gfla::pose_transfer::{Args, run};

fn main() {
    // Tensors freed on every step are reused, not mapped afresh (see the function).
    gfla_ops::reuse_freed_memory();
    let args = Args::parse();
    let start = Instant::now();
    match run(&args) {
        Ok(report) => {
            println!(
                "rendered {} pose(s) with the {} model in {:.1} s",
                report.frames,
                report.model,
                start.elapsed().as_secs_f64()
            );
            print!("{report}");
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
