//! The image operations of torchvision's automatic augmentation policies (`_apply_op` in
//! `transforms/autoaugment.py`) and of `ColorJitter`, on 8-bit RGB images, computed as
//! torchvision computes them on PIL images (Pillow's affine transform with nearest
//! neighbours, its blend, its lookup tables, its smoothing filter, its HSV conversion), so
//! that a policy written for torchvision gives the same pixels here, within one level.
//!
//! Written here because no Rust crate reproduces Pillow's arithmetic; `tests/recipe.rs`
//! compares every operation with torchvision's on fixed images.

use image::{Rgb, RgbImage};

/// One operation with its magnitude, as `_apply_op(img, name, magnitude)` takes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// Unchanged.
    Identity,
    /// Horizontal shear by `atan(m)` about the top-left corner.
    ShearX(f64),
    /// Vertical shear by `atan(m)` about the top-left corner.
    ShearY(f64),
    /// Shift right by `int(m)` pixels.
    TranslateX(f64),
    /// Shift down by `int(m)` pixels.
    TranslateY(f64),
    /// Rotation by `m` degrees counter-clockwise about the centre.
    Rotate(f64),
    /// Brightness factor `1 + m`.
    Brightness(f64),
    /// Saturation factor `1 + m` (PIL's `Color`).
    Color(f64),
    /// Contrast factor `1 + m`.
    Contrast(f64),
    /// Sharpness factor `1 + m`.
    Sharpness(f64),
    /// Keep the `m` highest bits.
    Posterize(u32),
    /// Invert every value at or above `m`.
    Solarize(f64),
    /// Stretch each channel to the full range.
    AutoContrast,
    /// Equalise each channel's histogram.
    Equalize,
}

impl Op {
    /// The operation applied to `img`; off-image pixels become black, as with torchvision's
    /// default fill.
    pub fn apply(self, img: &RgbImage) -> RgbImage {
        match self {
            Op::Identity => img.clone(),
            Op::ShearX(m) => affine(
                img,
                [0.0, 0.0],
                [m.atan().to_degrees(), 0.0],
                Some([0.0; 2]),
            ),
            Op::ShearY(m) => affine(
                img,
                [0.0, 0.0],
                [0.0, m.atan().to_degrees()],
                Some([0.0; 2]),
            ),
            Op::TranslateX(m) => affine(img, [m.trunc(), 0.0], [0.0; 2], None),
            Op::TranslateY(m) => affine(img, [0.0, m.trunc()], [0.0; 2], None),
            Op::Rotate(m) => rotate(img, m),
            Op::Brightness(m) => brightness(img, 1.0 + m),
            Op::Color(m) => saturation(img, 1.0 + m),
            Op::Contrast(m) => contrast(img, 1.0 + m),
            Op::Sharpness(m) => sharpness(img, 1.0 + m),
            Op::Posterize(bits) => {
                let mask = !(((1u32 << (8 - bits.min(8))) - 1) as u8);
                lut(img, |_, v| v & mask)
            }
            Op::Solarize(t) => lut(img, |_, v| if f64::from(v) < t { v } else { 255 - v }),
            Op::AutoContrast => autocontrast(img),
            Op::Equalize => equalize(img),
        }
    }
}

/// Each value through `f(channel, value)`.
fn lut(img: &RgbImage, f: impl Fn(usize, u8) -> u8) -> RgbImage {
    let tables: Vec<[u8; 256]> = (0..3)
        .map(|c| std::array::from_fn(|v| f(c, v as u8)))
        .collect();
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for c in 0..3 {
            p.0[c] = tables[c][p.0[c] as usize];
        }
    }
    out
}

/// Pillow's `Image.blend(a, b, alpha)`: `a + alpha * (b - a)` in single precision, truncated,
/// clipped to [0, 255] when alpha extrapolates.
pub fn blend(a: &RgbImage, b: &RgbImage, alpha: f64) -> RgbImage {
    let alpha = alpha as f32;
    let mut out = a.clone();
    for (o, q) in out.iter_mut().zip(b.iter()) {
        let v = f32::from(*o) + alpha * (f32::from(*q) - f32::from(*o));
        *o = if (0.0..=1.0).contains(&alpha) {
            v as u8
        } else {
            v.clamp(0.0, 255.0) as u8
        };
    }
    out
}

/// Pillow's RGB -> L: ITU-R 601 luma in 16-bit fixed point, rounded.
pub fn luma(p: &Rgb<u8>) -> u8 {
    let [r, g, b] = p.0.map(u32::from);
    ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
}

/// `ImageEnhance.Brightness`: a blend with black.
pub fn brightness(img: &RgbImage, factor: f64) -> RgbImage {
    blend(&RgbImage::new(img.width(), img.height()), img, factor)
}

/// `ImageEnhance.Color`: a blend with the image's grey levels.
pub fn saturation(img: &RgbImage, factor: f64) -> RgbImage {
    let grey = RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let l = luma(img.get_pixel(x, y));
        Rgb([l, l, l])
    });
    blend(&grey, img, factor)
}

/// `ImageEnhance.Contrast`: a blend with a flat image at the mean grey level (rounded).
pub fn contrast(img: &RgbImage, factor: f64) -> RgbImage {
    let n = u64::from(img.width()) * u64::from(img.height());
    let sum: u64 = img.pixels().map(|p| u64::from(luma(p))).sum();
    let mean = (sum as f64 / n.max(1) as f64 + 0.5) as u8;
    blend(
        &RgbImage::from_pixel(img.width(), img.height(), Rgb([mean; 3])),
        img,
        factor,
    )
}

/// `ImageEnhance.Sharpness`: a blend with `ImageFilter.SMOOTH` (3x3, centre 5, others 1, /13),
/// which leaves the border pixels as they are.
pub fn sharpness(img: &RgbImage, factor: f64) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut smooth = img.clone();
    if w >= 3 && h >= 3 {
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                for c in 0..3 {
                    let mut sum = 0f32;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let k = if dx == 1 && dy == 1 { 5.0 } else { 1.0 } / 13.0;
                            sum += k * f32::from(img.get_pixel(x + dx - 1, y + dy - 1).0[c]);
                        }
                    }
                    smooth.get_pixel_mut(x, y).0[c] = (sum + 0.5).clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    blend(&smooth, img, factor)
}

/// `ImageOps.autocontrast` (no cutoff): each channel's lowest value to 0 and highest to 255.
pub fn autocontrast(img: &RgbImage) -> RgbImage {
    let mut lo = [255u8; 3];
    let mut hi = [0u8; 3];
    for p in img.pixels() {
        for c in 0..3 {
            lo[c] = lo[c].min(p.0[c]);
            hi[c] = hi[c].max(p.0[c]);
        }
    }
    lut(img, |c, v| {
        if hi[c] <= lo[c] {
            return v;
        }
        let scale = 255.0 / f64::from(hi[c] - lo[c]);
        let offset = -f64::from(lo[c]) * scale;
        (f64::from(v) * scale + offset).clamp(0.0, 255.0) as u8
    })
}

/// `ImageOps.equalize`: per channel, Pillow's lookup table from the histogram.
pub fn equalize(img: &RgbImage) -> RgbImage {
    let mut hist = [[0u64; 256]; 3];
    for p in img.pixels() {
        for c in 0..3 {
            hist[c][p.0[c] as usize] += 1;
        }
    }
    let tables: Vec<[u8; 256]> = hist
        .iter()
        .map(|h| {
            let used: Vec<u64> = h.iter().copied().filter(|&n| n > 0).collect();
            let step = match used.as_slice() {
                [] | [_] => 0,
                [.., last] => (used.iter().sum::<u64>() - last) / 255,
            };
            if step == 0 {
                return std::array::from_fn(|i| i as u8);
            }
            let mut n = step / 2;
            std::array::from_fn(|i| {
                let v = (n / step).min(255) as u8;
                n += h[i];
                v
            })
        })
        .collect();
    lut(img, |c, v| tables[c][v as usize])
}

/// torchvision's `affine` on a PIL image (angle 0, scale 1): the inverse matrix of
/// `_get_inverse_affine_matrix`, about `centre` (none: the image's centre), then Pillow's
/// nearest-neighbour transform.
fn affine(
    img: &RgbImage,
    translate: [f64; 2],
    shear: [f64; 2],
    centre: Option<[f64; 2]>,
) -> RgbImage {
    let (w, h) = img.dimensions();
    let [cx, cy] = centre.unwrap_or([f64::from(w) * 0.5, f64::from(h) * 0.5]);
    let [tx, ty] = translate;
    let (sx, sy) = (shear[0].to_radians(), shear[1].to_radians());
    let a = (-sy).cos() / sy.cos();
    let b = -(-sy).cos() * sx.tan() / sy.cos();
    let c = (-sy).sin() / sy.cos();
    let d = -(-sy).sin() * sx.tan() / sy.cos() + 1.0;
    let mut m = [d, -b, 0.0, -c, a, 0.0];
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
    m[2] += cx;
    m[5] += cy;
    transform(img, m)
}

/// Pillow's `Image.rotate(angle)` (same size, about the centre, nearest neighbours).
fn rotate(img: &RgbImage, angle: f64) -> RgbImage {
    let angle = angle.rem_euclid(360.0);
    let (w, h) = img.dimensions();
    if angle == 0.0 {
        return img.clone();
    }
    if angle == 180.0 {
        return image::imageops::rotate180(img);
    }
    if w == h && angle == 90.0 {
        return image::imageops::rotate270(img);
    }
    if w == h && angle == 270.0 {
        return image::imageops::rotate90(img);
    }
    let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
    let t = -angle.to_radians();
    // Python's round(x, 15), which Pillow applies to the rotation's entries.
    let r15 = |v: f64| (v * 1e15).round() / 1e15;
    let mut m = [
        r15(t.cos()),
        r15(t.sin()),
        0.0,
        r15(-t.sin()),
        r15(t.cos()),
        0.0,
    ];
    m[2] = m[0] * -cx + m[1] * -cy + cx;
    m[5] = m[3] * -cx + m[4] * -cy + cy;
    transform(img, m)
}

/// Pillow's affine transform with nearest neighbours: output pixel (x, y) takes the input pixel
/// under `m` applied to its centre; black outside. Pillow steps the coordinates in floating
/// point for a pure shift or scale and in 16.16 fixed point otherwise, and so does this.
fn transform(img: &RgbImage, m: [f64; 6]) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::new(w, h);
    let mut put = |x: u32, y: u32, xin: i64, yin: i64| {
        if (0..i64::from(w)).contains(&xin) && (0..i64::from(h)).contains(&yin) {
            out.put_pixel(x, y, *img.get_pixel(xin as u32, yin as u32));
        }
    };
    if m[1] == 0.0 && m[3] == 0.0 {
        let coord = |v: f64| if v < 0.0 { -1 } else { v as i64 };
        let mut yo = m[5] + m[4] * 0.5;
        for y in 0..h {
            let mut xo = m[2] + m[0] * 0.5;
            for x in 0..w {
                put(x, y, coord(xo), coord(yo));
                xo += m[0];
            }
            yo += m[4];
        }
        return out;
    }
    let fix = |v: f64| (v * 65536.0 + 0.5).floor() as i64;
    let (a0, a1, a3, a4) = (fix(m[0]), fix(m[1]), fix(m[3]), fix(m[4]));
    let mut a2 = fix(m[2] + m[0] * 0.5 + m[1] * 0.5);
    let mut a5 = fix(m[5] + m[3] * 0.5 + m[4] * 0.5);
    for y in 0..h {
        let (mut xx, mut yy) = (a2, a5);
        for x in 0..w {
            put(x, y, xx >> 16, yy >> 16);
            xx += a0;
            yy += a3;
        }
        a2 += a1;
        a5 += a4;
    }
    out
}

/// torchvision's `adjust_hue` on a PIL image: to Pillow's 8-bit HSV, the hue shifted by
/// `int8(factor * 255)` with wrap-around, and back.
pub fn hue(img: &RgbImage, factor: f64) -> RgbImage {
    let shift = ((factor * 255.0) as i8) as u8;
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let [h, s, v] = to_hsv(p.0);
        p.0 = from_hsv([h.wrapping_add(shift), s, v]);
    }
    out
}

/// Pillow's RGB -> HSV (after Python's `colorsys`, scaled to bytes by truncation), with its
/// mix of single and double precision, which decides a level here and there.
fn to_hsv([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    if max == min {
        return [0, 0, max];
    }
    let cr = f32::from(max - min);
    let s = cr / f32::from(max);
    let (rc, gc, bc) = (
        f32::from(max - r) / cr,
        f32::from(max - g) / cr,
        f32::from(max - b) / cr,
    );
    let h = if r == max {
        bc - gc
    } else if g == max {
        (2.0 + f64::from(rc) - f64::from(bc)) as f32
    } else {
        (4.0 + f64::from(gc) - f64::from(rc)) as f32
    };
    let h = ((f64::from(h) / 6.0 + 1.0) % 1.0) as f32;
    let byte = |v: f32| ((f64::from(v) * 255.0) as i32).clamp(0, 255) as u8;
    [byte(h), byte(s), max]
}

/// Pillow's HSV -> RGB, with the same precision as its C code.
fn from_hsv([h, s, v]: [u8; 3]) -> [u8; 3] {
    if s == 0 {
        return [v; 3];
    }
    let hf = f64::from(h) * 6.0 / 255.0;
    let i = hf.floor() as i32;
    let f = (hf - f64::from(i)) as f32;
    let fs = (f64::from(s) / 255.0) as f32;
    let vf = f64::from(v);
    let byte = |x: f64| (x.round() as i32).clamp(0, 255) as u8;
    let (p, q, t) = (
        byte(vf * (1.0 - f64::from(fs))),
        byte(vf * (1.0 - f64::from(fs * f))),
        byte(vf * (1.0 - f64::from(fs) * (1.0 - f64::from(f)))),
    );
    match i % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 20) as u8, (y * 30) as u8, ((x + y) * 7) as u8])
        })
    }

    #[test]
    fn translation_shifts_and_fills_black() {
        let img = ramp(6, 5);
        let out = Op::TranslateX(2.7).apply(&img);
        // int(2.7) = 2 pixels right.
        assert_eq!(out.get_pixel(2, 1), img.get_pixel(0, 1));
        assert_eq!(out.get_pixel(1, 1), &Rgb([0, 0, 0]));
        let out = Op::TranslateY(-1.0).apply(&img);
        assert_eq!(out.get_pixel(3, 0), img.get_pixel(3, 1));
        assert_eq!(out.get_pixel(3, 4), &Rgb([0, 0, 0]));
    }

    #[test]
    fn quarter_turns_of_a_square_are_exact() {
        let img = ramp(5, 5);
        let turned = Op::Rotate(90.0).apply(&img);
        // Counter-clockwise: the top-right corner goes to the top-left.
        assert_eq!(turned.get_pixel(0, 0), img.get_pixel(4, 0));
        assert_eq!(Op::Rotate(360.0).apply(&img), img);
        let back = Op::Rotate(-90.0).apply(&turned);
        assert_eq!(back, img);
    }

    #[test]
    fn lookup_operations() {
        let img = RgbImage::from_fn(4, 1, |x, _| Rgb([(x * 60 + 10) as u8, 200, 3]));
        let post = Op::Posterize(2).apply(&img);
        assert_eq!(post.get_pixel(1, 0).0, [64, 192, 0]);
        let sol = Op::Solarize(128.0).apply(&img);
        assert_eq!(sol.get_pixel(3, 0).0, [255 - 190, 255 - 200, 3]);
        let auto = Op::AutoContrast.apply(&img);
        assert_eq!(
            (auto.get_pixel(0, 0).0[0], auto.get_pixel(3, 0).0[0]),
            (0, 255)
        );
        // A flat channel stays as it is.
        assert_eq!(auto.get_pixel(2, 0).0[1], 200);
    }

    #[test]
    fn enhancers_at_factor_one_change_nothing() {
        let img = ramp(7, 6);
        for op in [
            Op::Brightness(0.0),
            Op::Color(0.0),
            Op::Contrast(0.0),
            Op::Sharpness(0.0),
        ] {
            assert_eq!(op.apply(&img), img, "{op:?}");
        }
        assert_eq!(brightness(&img, 0.0), RgbImage::new(7, 6));
    }

    #[test]
    fn hsv_round_trips_within_a_level() {
        for r in (0..=255u8).step_by(15) {
            for g in (0..=255u8).step_by(17) {
                for b in (0..=255u8).step_by(51) {
                    let back = from_hsv(to_hsv([r, g, b]));
                    let err = back.iter().zip([r, g, b]).map(|(a, b)| a.abs_diff(b)).max();
                    // 8-bit hue and saturation lose up to a few levels on saturated colours.
                    assert!(err.unwrap_or(0) <= 6, "{:?} -> {back:?}", [r, g, b]);
                }
            }
        }
    }
}
