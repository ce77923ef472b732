//! Recalibrates a trained model's scores on annotated dev data (what `train` does as its last
//! stage) and saves the result as a new model directory; prints dev ECE before and after.
//!   cargo run --release --example calibrate -- MODEL_DIR OUT_DIR DEV [DEV_TOPICS]

use newstag::data::load::{read_all, AnnotatedFile};
use newstag::model::NewsTagger;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        a.len() >= 3,
        "usage: calibrate MODEL_DIR OUT_DIR DEV [DEV_TOPICS]"
    );
    let mut model = NewsTagger::load(a[0].as_ref(), &candle_core::Device::Cpu)?;
    let dev_file = AnnotatedFile::new(PathBuf::from(&a[2]), a.get(3).map(PathBuf::from));
    let dev = read_all(&[dev_file], None, false)?;
    let fitted = newstag::train::calibrate::calibrate(&mut model, &dev, 32)?
        .ok_or_else(|| anyhow::anyhow!("{}: nothing to calibrate on", a[2]))?;
    println!("{:?}", fitted.calibration);
    print!(
        "before (dev):\n{}after (dev, fitted there):\n{}",
        fitted.before.table(),
        fitted.after.table()
    );
    model.save(a[1].as_ref())
}
