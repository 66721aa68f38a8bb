//! File to file: restore one image with the built-in model (or a bundle folder), on the best backend here.
//!
//!     cargo run --release --example restore -- INPUT OUTPUT [BUNDLE]

use diffir::{Bundle, Pipeline, Progress, RestoreOptions};

fn main() -> Result<(), diffir::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (input, output) = match &args[..] {
        [input, output, ..] => (input, output),
        _ => {
            eprintln!("usage: restore INPUT OUTPUT [BUNDLE]");
            std::process::exit(2);
        }
    };
    let bundle = match args.get(2) {
        Some(dir) => Bundle::load(dir)?,
        None => Bundle::builtin()?,
    };
    let options = RestoreOptions {
        noise: diffir::Noise::Seed(7),
        ..RestoreOptions::default()
    };
    let pipeline = Pipeline::open(bundle, &options)?;
    eprintln!("{}", pipeline.backend());
    let image = diffir::read_image(input.as_ref())?;
    let progress = |p: Progress| eprint!("\rtile {}/{}", p.tiles_done, p.tiles_total);
    let control = diffir::Control {
        progress: Some(&progress),
        ..Default::default()
    };
    let restored = pipeline.restore_image_with(&image, None, &control)?;
    eprintln!();
    diffir::write_image(output.as_ref(), &restored.image, pipeline.quantize(), true)?;
    println!(
        "{input} ({}x{}) -> {output} ({}x{}) in {:.2} s",
        image.width,
        image.height,
        restored.image.width,
        restored.image.height,
        restored.timings.total().as_secs_f64()
    );
    Ok(())
}
