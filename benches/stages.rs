//! Criterion benches of the still-image stages on the embedded sample (`ferrite::bench::SAMPLE_JPEG`,
//! 512x512, one face): decode, detect (BlazeFace short: whole stage and graph alone), crop+CLAHE,
//! and the ensemble graph of the bundled fp32 and int8 models. The same split as `ferrite bench`,
//! with criterion's statistics instead of medians over a fixed count.
//!
//!     cargo bench --bench stages                 # full run (about a minute)
//!     cargo bench --bench stages -- --quick      # a few seconds per bench
//!     cargo bench --bench stages -- ensemble     # only names containing "ensemble"

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ferrite::align;
use ferrite::bench::SAMPLE_JPEG;
use ferrite::detect::{Detector, DetectorConfig};
use ferrite::ensemble::Ensemble;
use ferrite::models;

const MODELS: [&str; 2] = ["fer2013-48-fp32", "fer2013-48-int8"];

fn decode() -> image::RgbImage {
    image::load_from_memory(SAMPLE_JPEG)
        .expect("the embedded sample decodes")
        .into_rgb8()
}

fn stages(c: &mut Criterion) {
    c.bench_function("decode", |b| b.iter(decode));

    let rgb = decode();
    let detector = Detector::new(DetectorConfig::default()).expect("embedded BlazeFace loads");
    c.bench_function("detect/short", |b| {
        b.iter(|| detector.detect(black_box(&rgb)).unwrap())
    });
    let input = detector.model_input(&rgb);
    c.bench_function("detect/short graph", |b| {
        b.iter(|| detector.run_model(black_box(&input)).unwrap())
    });

    let face = detector.detect(&rgb).unwrap().remove(0);
    for name in MODELS {
        let source = models::bundled(name).expect("bundled model");
        let crop = source.manifest.crop_geometry();
        let ensemble = Ensemble::load(&source).expect("bundled model loads");
        let size = ensemble.input_size().0;
        let mut session = ensemble.session().unwrap();
        if name == MODELS[0] {
            // Preprocessing does not depend on the model's numeric format: bench it once.
            c.bench_function("crop+clahe", |b| {
                b.iter(|| {
                    let gray = align::rgb_to_gray(black_box(&rgb));
                    let cropped = align::crop_face(&gray, &face, &crop, size);
                    session.prepare(&cropped).unwrap();
                })
            });
        }
        let cropped = align::crop_face(&align::rgb_to_gray(&rgb), &face, &crop, size);
        session.prepare(&cropped).unwrap();
        c.bench_function(&format!("ensemble/{name}"), |b| {
            b.iter(|| session.run_prepared().unwrap())
        });
    }
}

criterion_group! {
    name = benches;
    // Short defaults so that a plain `cargo bench` stays around a minute on a small board;
    // command-line options (--sample-size, --measurement-time, --quick) override them.
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = stages
}
criterion_main!(benches);
