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
