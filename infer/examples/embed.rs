//! The README's embedding example: load a model file, predict one image's top 3.
//! `cargo run --release -p rekindle-infer --example embed -- MODEL IMAGE`

use rekindle_infer::{Classifier, rekindle_model::Backend};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(path)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: embed MODEL IMAGE");
    };
    let device = Backend::Flex.device()?;
    let classifier = Classifier::load(&model, &device)?;
    let image = image::open(&path)?;
    for label in &classifier.predict_images(&[image], 3)[0].top {
        println!("{:>12} {:5.1}%", label.class, 100.0 * label.probability);
    }
    Ok(())
}
