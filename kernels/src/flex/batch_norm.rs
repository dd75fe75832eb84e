//! BatchNorm's training forward and backward, fused and parallel over channels.
//!
//! Burn's composition makes ~10 passes forward and ~14 backward, single-threaded below 4M
//! elements on flex; here the forward reads the input twice (mean, then centred variance, as
//! PyTorch does) and writes once, the backward reads twice and writes once. Sums run in f64.

use rayon::prelude::*;

use super::buffer::{Output, vectorized};
use super::{relu, relu_passes};

/// `[batch, channels, spatial...]` seen as `[outer, channels, inner]`.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    outer: usize,
    /// Channels.
    pub channels: usize,
    inner: usize,
}

impl Shape {
    /// The shape of a tensor with these dimensions (rank 2 or more).
    pub fn of(dims: &[usize]) -> Self {
        Self {
            outer: dims[0],
            channels: dims[1],
            inner: dims[2..].iter().product(),
        }
    }

    /// Values per channel.
    fn count(&self) -> usize {
        self.outer * self.inner
    }

    /// The runs of channel `c`'s values: one of `inner` values per batch item.
    fn runs(&self, c: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.outer).map(move |b| (b * self.channels + c) * self.inner)
    }
}

/// Output and batch statistics of the forward.
pub struct Forward {
    /// Normalised output, shaped like the input.
    pub output: Vec<f32>,
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Biased variance per channel.
    pub variance: Vec<f32>,
}

/// The statistics a forward used.
pub struct Stats<'a> {
    /// Mean per channel.
    pub mean: &'a [f32],
    /// Biased variance per channel.
    pub variance: &'a [f32],
    /// Added to the variance before the square root.
    pub epsilon: f64,
}

/// Gradients of the forward.
pub struct Grads {
    /// Of the input.
    pub x: Vec<f32>,
    /// Of gamma.
    pub gamma: Vec<f32>,
    /// Of beta.
    pub beta: Vec<f32>,
    /// Of the sum before ReLU, when the forward applied ReLU (else it is `dy` itself).
    pub sum: Option<Vec<f32>>,
}

#[inline(always)]
fn run<'a>(x: &'a [f32], s: &Shape, start: usize) -> &'a [f32] {
    &x[start..start + s.inner]
}

/// Channel `c`'s mean and biased variance.
#[inline(always)]
fn moments(s: &Shape, x: &[f32], c: usize) -> (f64, f64) {
    let n = s.count().max(1) as f64;
    let sum: f64 = s.runs(c).map(|r| sum64(run(x, s, r))).sum();
    let mean = sum / n;
    let sq: f64 = s
        .runs(c)
        .map(|r| {
            let m = mean as f32;
            // f32 products of centred values, summed in f64 per run: accurate, and vectorised.
            sum64_map(run(x, s, r), |v| (v - m) * (v - m))
        })
        .sum();
    (mean, sq / n)
}

#[inline(always)]
fn sum64(v: &[f32]) -> f64 {
    sum64_map(v, |x| x)
}

/// Sums `f` over `v` in f32 lanes of 8 (vectorisable) folded into f64 every 256 values.
#[inline(always)]
fn sum64_map(v: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0.0f64;
    for block in v.chunks(256) {
        let mut lanes = [0.0f32; 8];
        let mut it = block.chunks_exact(8);
        for c in &mut it {
            for (l, x) in lanes.iter_mut().zip(c) {
                *l += f(*x);
            }
        }
        let tail: f32 = it.remainder().iter().map(|x| f(*x)).sum();
        total += lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64;
    }
    total
}

/// What the forward does after normalising: add a residual (shaped like the input), then ReLU.
#[derive(Clone, Copy, Default)]
pub struct Tail<'a> {
    /// The identity path of a residual block.
    pub residual: Option<&'a [f32]>,
    /// ReLU last.
    pub relu: bool,
}

/// Normalises `x` by its own batch statistics, scales by `gamma`, shifts by `beta`, then
/// applies `tail`.
pub fn forward(
    s: &Shape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    tail: &Tail,
) -> Forward {
    // Every element belongs to one channel's runs, each written below.
    let mut output = Output::new(x.len());
    let out = output.shared();
    let stats: Vec<(f32, f32)> =
        (0..s.channels)
            .into_par_iter()
            .map(|c| {
                vectorized(
                    #[inline(always)]
                    || {
                        let (mean, var) = moments(s, x, c);
                        let inv_std = 1.0 / (var + epsilon).sqrt();
                        let scale = (gamma[c] as f64 * inv_std) as f32;
                        let (m, shift) = (mean as f32, beta[c]);
                        let act = |z: f32| if tail.relu { relu(z) } else { z };
                        for r in s.runs(c) {
                            // SAFETY: channel c owns its runs; no other task touches them.
                            let y = unsafe { out.slice(r, s.inner) };
                            let xs = run(x, s, r);
                            match tail.residual {
                                Some(res) => y.iter_mut().zip(xs).zip(run(res, s, r)).for_each(
                                    |((y, v), a)| {
                                        *y = act((v - m) * scale + shift + a);
                                    },
                                ),
                                None => y
                                    .iter_mut()
                                    .zip(xs)
                                    .for_each(|(y, v)| *y = act((v - m) * scale + shift)),
                            }
                        }
                        (mean as f32, var as f32)
                    },
                )
            })
            .collect();
    let (mean, variance) = stats.into_iter().unzip();
    Forward {
        // SAFETY: every channel wrote all of its runs, which cover the tensor.
        output: unsafe { output.assume_init() },
        mean,
        variance,
    }
}

/// Gradients of [`forward`] given the output gradient `dy`; `output` is the forward's output
/// when it applied ReLU, whose zeros mask `dy`.
pub fn backward(
    s: &Shape,
    x: &[f32],
    gamma: &[f32],
    stats: &Stats,
    dy: &[f32],
    output: Option<&[f32]>,
) -> Grads {
    // Every element belongs to one channel's runs, each written below.
    let mut dx = Output::new(x.len());
    let out = dx.shared();
    // The masked gradient (the sum's), written by the first pass when ReLU applied.
    let mut sum = output.map(|_| Output::new(x.len()));
    let masked = sum.as_mut().map(Output::shared);
    let n = s.count().max(1) as f64;
    let params: Vec<(f32, f32)> = (0..s.channels)
        .into_par_iter()
        .map(|c| {
            vectorized(
                #[inline(always)]
                || {
                    let mean = stats.mean[c];
                    let inv_std = 1.0 / (stats.variance[c] as f64 + stats.epsilon).sqrt();
                    let mut sum_dy = 0.0f64;
                    let mut sum_dy_centred = 0.0f64;
                    for r in s.runs(c) {
                        let g = match (output, &masked) {
                            (Some(y), Some(m)) => {
                                // SAFETY: channel c owns its runs; no other task touches them.
                                let m = unsafe { m.slice(r, s.inner) };
                                let (yr, dr) = (run(y, s, r), run(dy, s, r));
                                for ((m, y), d) in m.iter_mut().zip(yr).zip(dr) {
                                    *m = if relu_passes(*y) { *d } else { 0.0 };
                                }
                                &*m
                            }
                            _ => run(dy, s, r),
                        };
                        sum_dy += sum64(g);
                        sum_dy_centred += dot64(run(x, s, r), g, mean);
                    }
                    // dx = gamma * inv_std * (dy - mean(dy) - x_hat * mean(dy * x_hat))
                    let k = gamma[c] as f64 * inv_std;
                    let a = k as f32;
                    // The mean is subtracted before scaling, as Burn does: over a single value per
                    // channel both differences are exactly zero, and so is the gradient.
                    let mean_dy = (sum_dy / n) as f32;
                    let slope = (-k * inv_std * inv_std * sum_dy_centred / n) as f32;
                    for r in s.runs(c) {
                        let g = match &masked {
                            // SAFETY: as above; the first pass wrote this run.
                            Some(m) => unsafe { &*m.slice(r, s.inner) },
                            None => run(dy, s, r),
                        };
                        // SAFETY: channel c owns its runs; no other task touches them.
                        let d = unsafe { out.slice(r, s.inner) };
                        for ((d, v), g) in d.iter_mut().zip(run(x, s, r)).zip(g) {
                            *d = a * (g - mean_dy) + slope * (v - mean);
                        }
                    }
                    ((sum_dy_centred * inv_std) as f32, sum_dy as f32)
                },
            )
        })
        .collect();
    let (gamma_grad, beta_grad) = params.into_iter().unzip();
    // SAFETY: every channel wrote all of its runs of both, which cover the tensor.
    let (x, sum) = unsafe { (dx.assume_init(), sum.map(|s| s.assume_init())) };
    Grads {
        x,
        gamma: gamma_grad,
        beta: beta_grad,
        sum,
    }
}

/// `sum((x - mean) * g)` in f64, vectorised like [`sum64_map`].
#[inline(always)]
fn dot64(x: &[f32], g: &[f32], mean: f32) -> f64 {
    let mut total = 0.0f64;
    for (xb, gb) in x.chunks(256).zip(g.chunks(256)) {
        let mut lanes = [0.0f32; 8];
        let (mut xi, mut gi) = (xb.chunks_exact(8), gb.chunks_exact(8));
        for (xc, gc) in (&mut xi).zip(&mut gi) {
            for ((l, x), g) in lanes.iter_mut().zip(xc).zip(gc) {
                *l += (x - mean) * g;
            }
        }
        let tail: f32 = xi
            .remainder()
            .iter()
            .zip(gi.remainder())
            .map(|(x, g)| (x - mean) * g)
            .sum();
        total += lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64;
    }
    total
}
