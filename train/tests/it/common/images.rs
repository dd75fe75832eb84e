//! A small image dataset made on the spot, shared with tune's end-to-end tests (which include
//! this file by path: test helpers cannot be a dependency).

use std::path::Path;

use image::{Rgb, RgbImage};

/// Three classes of 16x16 images told apart by colour, with some noise.
pub fn image_folder(root: &Path, per_class: u32) {
    let colours = [
        ("red", [200u8, 30, 30]),
        ("green", [30, 200, 30]),
        ("blue", [30, 30, 200]),
    ];
    for (name, c) in colours {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = RgbImage::from_fn(16, 16, |x, y| {
                let n = ((x * 7 + y * 13 + i * 31) % 40) as u8;
                Rgb([
                    c[0].saturating_add(n),
                    c[1].saturating_add(n),
                    c[2].saturating_add(n),
                ])
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

/// Three classes (`horizontal`, `diagonal`, `vertical`) of `side` x `side` images of stripes at
/// the class's angle, each image with its own stripe width, phase, colours and pixel noise drawn
/// from `seed`. Unlike [`image_folder`]'s flat colours they have spatial structure, as
/// photographs do: classes told apart by edges, not by a channel's mean.
// tune's end-to-end tests include this file for `image_folder` alone.
#[allow(dead_code)]
pub fn stripes_folder(root: &Path, per_class: u32, side: u32, seed: u64) {
    let mut state = seed;
    // splitmix64: a few uniform draws in [0, 1) without a dependency.
    let mut uniform = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    for (k, name) in ["horizontal", "diagonal", "vertical"].iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            // The direction the stripes vary along: y, the diagonal, x; give or take 0.15 rad.
            let angle = (2 - k) as f64 * std::f64::consts::FRAC_PI_4 + 0.3 * (uniform() - 0.5);
            let freq = 0.3 + 0.5 * uniform();
            let phase = std::f64::consts::TAU * uniform();
            let colour = [
                0.2 + 0.8 * uniform(),
                0.2 + 0.8 * uniform(),
                0.2 + 0.8 * uniform(),
            ];
            let (c, s) = (angle.cos(), angle.sin());
            let mut img = RgbImage::new(side, side);
            for (x, y, p) in img.enumerate_pixels_mut() {
                let wave = (freq * (x as f64 * c + y as f64 * s) + phase).sin();
                *p = Rgb(std::array::from_fn(|ch| {
                    let noise = 40.0 * (uniform() - 0.5);
                    (128.0 + 100.0 * wave * colour[ch] + noise).clamp(0.0, 255.0) as u8
                }));
            }
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}
