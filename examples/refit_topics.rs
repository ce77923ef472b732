//! Refits a trained model's topic head on frozen embeddings and prints dev topic micro-F1.
//!   cargo run --release --example refit_topics -- MODEL_DIR TRAIN TRAIN_TOPICS DEV DEV_TOPICS [OUT_DIR]

use newstag::data::load::{read_all, AnnotatedFile};
use newstag::model::NewsTagger;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let file = |p: &str, t: &str| AnnotatedFile::new(PathBuf::from(p), Some(PathBuf::from(t)));
    let mut model = NewsTagger::load(a[0].as_ref(), &candle_core::Device::Cpu)?;
    let train = read_all(&[file(&a[1], &a[2])], None, false)?;
    let dev = read_all(&[file(&a[3], &a[4])], None, false)?;
    let t0 = std::time::Instant::now();
    let f1 = newstag::train::topic_head::refit(&mut model, &train, &dev, 32)?;
    println!(
        "refit dev topic micro-F1 {f1:?} (thresholds {:?}) in {:.0}s",
        model.thresholds(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(out) = a.get(5) {
        model.save(out.as_ref())?;
    }
    Ok(())
}
