//! 2-D max pooling, parallel over planes.
//!
//! burn-flex pools one output element at a time with its window's index arithmetic, on one
//! thread: ~8% of a ResNet-50 forward at 64 px. Here each output row takes the maximum of whole
//! input runs, vectorised.

use burn::backend::Shape as Dims;
use rayon::prelude::*;

use super::buffer::{Output, vectorized};
use super::conv::{valid_range, with_phases};
use crate::extension::PoolGeom;

/// Sizes of one pooling: input `[n, c, h, w]`, output `[n, c, ho, wo]`.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    planes: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    n: usize,
    c: usize,
    geom: PoolGeom,
}

impl Shape {
    /// The sizes of pooling `x` with `geom`.
    pub fn new(x: &Dims, geom: PoolGeom) -> Self {
        Self {
            planes: x[0] * x[1],
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            ho: geom.out_len(0, x[2]),
            wo: geom.out_len(1, x[3]),
            geom,
        }
    }

    /// Output dimensions.
    pub fn y_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.ho, self.wo]
    }
}

/// One window column: the output columns `[lo, hi)` it covers inside the input, and its first
/// input column as `(phase, index)` for [`Phases::run`](super::conv::Phases::run).
type Tap = (usize, usize, (usize, usize));

/// The maximum over each window; padding never wins (it is not a value).
pub fn max_pool(s: &Shape, x: &[f32]) -> Vec<f32> {
    // Every output row is written in full below.
    let len = s.planes * s.ho * s.wo;
    if len == 0 {
        return Vec::new();
    }
    let mut y = Output::new(len);
    let out = y.shared();
    // Per window column: the output columns it covers, and where its input run starts.
    let [sw, pw] = [s.geom.stride[1], s.geom.padding[1]];
    let taps: Vec<Tap> = (0..s.geom.kernel[1])
        .map(|kj| {
            let dx = kj as isize - pw as isize;
            let (lo, hi) = valid_range(s.wo, s.w, sw, dx);
            let start = (lo as isize * sw as isize + dx).max(0) as usize;
            (lo, hi, (start % sw, start / sw))
        })
        .filter(|(lo, hi, _)| lo < hi)
        .collect();
    // SAFETY: the whole output, split into disjoint planes below.
    let planes = unsafe { out.slice(0, len) };
    planes
        .par_chunks_mut(s.ho * s.wo)
        .zip(x.par_chunks(s.h * s.w))
        .for_each(|(out, plane)| {
            vectorized(
                #[inline(always)]
                || pool_plane(s, &taps, plane, out),
            )
        });
    // SAFETY: every plane's rows were written in full.
    unsafe { y.assume_init() }
}

#[inline(always)]
fn pool_plane(s: &Shape, taps: &[Tap], plane: &[f32], out: &mut [f32]) {
    let [sh, sw] = s.geom.stride;
    let ph = s.geom.padding[0];
    // Split by column phase, every window row is a contiguous run and the maximum vectorises.
    with_phases(
        plane,
        s.h,
        s.w,
        sw,
        #[inline(always)]
        |phases| {
            for (oh, row) in out.chunks_exact_mut(s.wo).enumerate() {
                row.fill(f32::NEG_INFINITY);
                for ki in 0..s.geom.kernel[0] {
                    let ih = (oh * sh + ki) as isize - ph as isize;
                    if ih < 0 || ih >= s.h as isize {
                        continue;
                    }
                    for &(lo, hi, start) in taps {
                        let src = phases.run(ih as usize, start, hi - lo);
                        for (m, &v) in row[lo..hi].iter_mut().zip(src) {
                            // NaN wins, as in PyTorch.
                            *m = if v > *m || v.is_nan() { v } else { *m };
                        }
                    }
                }
            }
        },
    )
}
