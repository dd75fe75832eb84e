//! Convolution forward, input gradient and weight gradient as a few large GEMMs per layer.
//!
//! Images are processed in chunks: a chunk's im2col columns `[c*kh*kw, images*ho*wo]` sit side by
//! side, so small maps (layer4 is 2x2 at 64 px) still give the GEMM a wide operand, and chunks run
//! in parallel, each on its own reused scratch buffer. Why not Burn's defaults: the weight
//! gradient there is one thin GEMM per input channel re-reading the whole output gradient, and the
//! input gradient goes through a transposed convolution with zeroed buffers even for 1x1 kernels.

use burn::backend::Shape;
use rayon::prelude::*;

use super::buffer::{Output, vectorized, with_scratch};
use super::gemm::{Mat, Parallelism, matmul};
use crate::extension::ConvGeom;

/// A chunk is widened until its GEMM has about this many columns (or the batch runs out).
const TARGET_COLUMNS: usize = 512;

/// Sizes of one convolution: input `[n, c, h, w]`, weight `[o, c, kh, kw]`, output `[n, o, ho, wo]`.
#[derive(Clone, Copy, Debug)]
pub struct ConvShape {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    geom: ConvGeom,
}

impl ConvShape {
    /// The sizes of convolving `x` with `weight`.
    pub fn new(x: &Shape, weight: &Shape, geom: ConvGeom) -> Self {
        let (kh, kw) = (weight[2], weight[3]);
        Self {
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            o: weight[0],
            kh,
            kw,
            ho: geom.out_len(0, x[2], kh),
            wo: geom.out_len(1, x[3], kw),
            geom,
        }
    }

    /// Output dimensions.
    pub fn y_dims(&self) -> [usize; 4] {
        [self.n, self.o, self.ho, self.wo]
    }

    /// Input dimensions.
    pub fn x_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// Weight dimensions.
    pub fn w_dims(&self) -> [usize; 4] {
        [self.o, self.c, self.kh, self.kw]
    }

    /// Rows of the im2col matrix: the GEMM's inner dimension.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions per image.
    fn p(&self) -> usize {
        self.ho * self.wo
    }

    /// Input values per image.
    fn image(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Stride 1 and an output as large as the input (a 3x3 kernel padded by 1): each im2col row
    /// is the input plane shifted, copied in one piece (see [`im2col_same`]).
    fn same(&self) -> bool {
        self.geom.stride == [1, 1] && self.ho == self.h && self.wo == self.w
    }

    /// A 1x1, stride-1, unpadded kernel: the input already is its own im2col matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.geom.stride == [1, 1] && self.geom.padding == [0, 0]
    }
}

/// How a batch is split: `chunks` chunks of `per_chunk` images (the last may be smaller).
#[derive(Clone, Copy, Debug)]
struct Plan {
    per_chunk: usize,
    chunks: usize,
    /// The chunks alone cannot fill the machine: each one's copies and GEMM use every thread.
    wide: bool,
    /// Threads each GEMM may use.
    gemm: Parallelism,
}

impl Plan {
    fn new(s: &ConvShape) -> Self {
        let threads = rayon::current_num_threads().max(1);
        let per_target = TARGET_COLUMNS.div_ceil(s.p().max(1)).max(1);
        // At least one chunk per thread while the batch allows, and a multiple of the thread
        // count so no thread waits on the last one alone.
        let mut chunks = s.n.div_ceil(per_target).max(s.n.min(threads));
        if chunks > threads {
            chunks = chunks.div_ceil(threads) * threads;
        }
        let per_chunk = s.n.div_ceil(chunks.max(1)).max(1);
        let chunks = s.n.div_ceil(per_chunk);
        let wide = chunks < threads;
        Self {
            per_chunk,
            chunks,
            wide,
            gemm: if wide {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            },
        }
    }

    /// First image and image count of chunk `i`.
    fn chunk(&self, i: usize, n: usize) -> (usize, usize) {
        let first = i * self.per_chunk;
        (first, self.per_chunk.min(n - first))
    }

    /// Runs `f` on every chunk: in parallel when there are several, else on this thread so
    /// that the GEMM gets the threads.
    fn for_each(&self, n: usize, f: impl Fn(usize, usize) + Sync) {
        if self.chunks == 1 {
            f(0, n);
        } else {
            (0..self.chunks).into_par_iter().for_each(|i| {
                let (first, count) = self.chunk(i, n);
                f(first, count)
            });
        }
    }
}

/// The columns `[lo, hi)` of an output row whose input column `col * stride + offset` lies
/// inside `[0, len)`.
#[inline(always)]
pub(super) fn valid_range(
    out_len: usize,
    len: usize,
    stride: usize,
    offset: isize,
) -> (usize, usize) {
    let (stride_i, len_i) = (stride as isize, len as isize);
    let lo = if offset < 0 {
        ((-offset) + stride_i - 1) / stride_i
    } else {
        0
    };
    let hi = if len_i - 1 - offset < 0 {
        0
    } else {
        (len_i - 1 - offset) / stride_i + 1
    };
    let lo = (lo as usize).min(out_len);
    (lo, (hi as usize).clamp(lo, out_len))
}

/// The part of an im2col row of a [`ConvShape::same`] convolution that one copy fills: its
/// kernel offset `(dy, dx)` shifts the plane by `dy * w + dx`; rows `[rlo, rhi)` and columns
/// `[lo, hi)` read inside the input.
struct Shift {
    shift: isize,
    rows: (usize, usize),
    cols: (usize, usize),
    /// The contiguous range `[a, b)` of the row whose source index lies inside the plane.
    span: (usize, usize),
}

impl Shift {
    #[inline(always)]
    fn new(s: &ConvShape, ki: usize, kj: usize) -> Self {
        let dy = ki as isize - s.geom.padding[0] as isize;
        let dx = kj as isize - s.geom.padding[1] as isize;
        let rows = valid_range(s.ho, s.h, 1, dy);
        let cols = valid_range(s.wo, s.w, 1, dx);
        let shift = dy * s.w as isize + dx;
        let (a, b) = ((rows.0 * s.w) as isize, (rows.1 * s.w) as isize);
        let plane = (s.h * s.w) as isize;
        let span = (
            a.max(-shift).min(b) as usize,
            b.min(plane - shift).max(a) as usize,
        );
        Self {
            shift,
            rows,
            cols,
            span,
        }
    }

    /// The source range of the copy (inside the plane whenever the span is not empty).
    fn source(&self) -> std::ops::Range<usize> {
        let (a, b) = self.span;
        if a == b {
            return 0..0;
        }
        (a as isize + self.shift) as usize..(b as isize + self.shift) as usize
    }
}

/// For each kernel column `kj` of a [`ConvShape::same`] convolution, a mask over one image's
/// output positions: all ones where the input column `ow + kj - pad` lies inside the plane. ANDed
/// with a shifted copy it zeroes the values that wrapped around a row's end, in one vectorised
/// pass instead of two tiny fills per row (which dominated at 4x4 and 2x2 maps).
fn column_masks(s: &ConvShape) -> Vec<u32> {
    let mut masks = vec![0u32; s.kw * s.p()];
    for (kj, mask) in masks.chunks_exact_mut(s.p()).enumerate() {
        let (lo, hi) = valid_range(s.wo, s.w, 1, kj as isize - s.geom.padding[1] as isize);
        for row in mask.chunks_exact_mut(s.wo) {
            row[lo..hi].fill(u32::MAX);
        }
    }
    masks
}

/// `v` where `mask` is all ones, `+0.0` where it is zero (never NaN, unlike a multiplication).
#[inline(always)]
fn masked(v: f32, mask: u32) -> f32 {
    f32::from_bits(v.to_bits() & mask)
}

/// [`im2col_channel`] for a [`ConvShape::same`] convolution: each row is one copy of the shifted
/// plane, ANDed with its column mask where some columns fall in the padding (they picked up
/// wrapped values). At 64 px the maps are 16x16 down to 2x2, where one small copy per output
/// row costs more than the data it moves.
#[inline(always)]
fn im2col_same(
    s: &ConvShape,
    taps: &Taps,
    plane: &[f32],
    rows: &mut [f32],
    (ld, offset): (usize, usize),
) {
    let masks = &taps.masks;
    for ki in 0..s.kh {
        for kj in 0..s.kw {
            let dst = &mut rows[(ki * s.kw + kj) * ld + offset..][..s.p()];
            let sh = &taps.shifts[ki * s.kw + kj];
            let ((rlo, rhi), (lo, hi)) = (sh.rows, sh.cols);
            let (a, b) = sh.span;
            // Outside the span: padding rows, and padding columns at the span's ends.
            dst[..a].fill(0.0);
            dst[b..].fill(0.0);
            let (dst, src) = (&mut dst[a..b], &plane[sh.source()]);
            if lo > 0 || hi < s.w {
                let mask = &masks[kj * s.p() + a..][..b - a];
                for ((d, v), m) in dst.iter_mut().zip(src).zip(mask) {
                    *d = masked(*v, *m);
                }
            } else {
                dst.copy_from_slice(src);
            }
            debug_assert!(rlo * s.w <= a && b <= rhi * s.w);
        }
    }
}

/// [`col2im_channel`] for a [`ConvShape::same`] convolution: each row is added to the shifted
/// plane in one pass, its entries in the padding (which belong to no input) masked to zero.
#[inline(always)]
fn col2im_same(
    s: &ConvShape,
    taps: &Taps,
    rows: &[f32],
    (ld, offset): (usize, usize),
    plane: &mut [f32],
) {
    let masks = &taps.masks;
    for ki in 0..s.kh {
        for kj in 0..s.kw {
            let src = &rows[(ki * s.kw + kj) * ld + offset..][..s.p()];
            let sh = &taps.shifts[ki * s.kw + kj];
            let (lo, hi) = sh.cols;
            let (a, b) = sh.span;
            let (dst, src) = (&mut plane[sh.source()], &src[a..b]);
            if lo > 0 || hi < s.w {
                let mask = &masks[kj * s.p() + a..][..b - a];
                for ((d, g), m) in dst.iter_mut().zip(src).zip(mask) {
                    *d += masked(*g, *m);
                }
            } else {
                for (d, g) in dst.iter_mut().zip(src) {
                    *d += g;
                }
            }
        }
    }
}

/// Writes one channel's im2col rows (`kh * kw` of them, row length `ld`) into `rows`, from
/// column `offset` on. With a horizontal stride the plane is first split into its column phases
/// ([`Phases`]), so that every row segment is one contiguous copy instead of a strided gather.
#[inline(always)]
fn im2col_channel(
    s: &ConvShape,
    taps: &Taps,
    plane: &[f32],
    rows: &mut [f32],
    (ld, offset): (usize, usize),
) {
    let [sh, sw] = s.geom.stride;
    let ph = s.geom.padding[0];
    with_phases(
        plane,
        s.h,
        s.w,
        sw,
        #[inline(always)]
        |phases| {
            for ki in 0..s.kh {
                for (kj, &(lo, hi, start)) in taps.cols.iter().enumerate() {
                    let dst = &mut rows[(ki * s.kw + kj) * ld + offset..][..s.p()];
                    for oh in 0..s.ho {
                        let d = &mut dst[oh * s.wo..][..s.wo];
                        let ih = (oh * sh + ki) as isize - ph as isize;
                        if ih < 0 || ih >= s.h as isize || lo == hi {
                            d.fill(0.0);
                            continue;
                        }
                        d[..lo].fill(0.0);
                        d[hi..].fill(0.0);
                        d[lo..hi].copy_from_slice(phases.run(ih as usize, start, hi - lo));
                    }
                }
            }
        },
    );
}

/// A plane `[h, w]` split by column phase for a stride `sw`: phase `r` holds columns `r`,
/// `r + sw`, ... of every row, so the columns `start, start + sw, ...` of a row are contiguous.
pub(super) struct Phases<'a> {
    data: &'a [f32],
    h: usize,
    /// Columns per phase row.
    wr: usize,
}

impl Phases<'_> {
    /// Row `i`'s `len` columns `start, start + sw, ...`, given as `(start % sw, start / sw)`
    /// (computed once per kernel tap by the caller: the stride is only known at run time).
    #[inline(always)]
    pub(super) fn run(&self, i: usize, (r, j): (usize, usize), len: usize) -> &[f32] {
        &self.data[(r * self.h + i) * self.wr + j..][..len]
    }
}

/// The index arithmetic of one im2col or col2im, done once per call instead of once per channel
/// and image (its divisions by run-time strides took a third of im2col's time on small maps).
struct Taps {
    /// Per kernel column: the output columns `[lo, hi)` reading inside the input, and the first
    /// input column read as `(phase, index)` for [`Phases::run`].
    cols: Vec<(usize, usize, (usize, usize))>,
    /// Per kernel tap `ki * kw + kj` of a [`ConvShape::same`] convolution: its shift.
    shifts: Vec<Shift>,
    /// The column masks of a [`ConvShape::same`] convolution.
    masks: Vec<u32>,
}

impl Taps {
    fn new(s: &ConvShape) -> Self {
        let sw = s.geom.stride[1];
        let cols = (0..s.kw)
            .map(|kj| {
                let dx = kj as isize - s.geom.padding[1] as isize;
                let (lo, hi) = valid_range(s.wo, s.w, sw, dx);
                // The first input column read (none when the tap reads only padding).
                let start = (lo as isize * sw as isize + dx).max(0) as usize;
                (lo, hi, (start % sw, start / sw))
            })
            .collect();
        let same = s.same();
        let shifts = if same {
            (0..s.kh * s.kw)
                .map(|t| Shift::new(s, t / s.kw, t % s.kw))
                .collect()
        } else {
            Vec::new()
        };
        let masks = if same { column_masks(s) } else { Vec::new() };
        Self {
            cols,
            shifts,
            masks,
        }
    }
}

thread_local! {
    // The phases of one plane at a time, reused: planes are small and split over and over.
    static PHASES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on `plane [h, w]` split by column phase for stride `sw` (the plane itself for 1).
#[inline(always)]
pub(super) fn with_phases<R>(
    plane: &[f32],
    h: usize,
    w: usize,
    sw: usize,
    f: impl FnOnce(&Phases) -> R,
) -> R {
    if sw == 1 {
        return f(&Phases {
            data: plane,
            h,
            wr: w,
        });
    }
    let wr = w.div_ceil(sw);
    let mut buf = PHASES.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buf.resize(sw * h * wr, 0.0);
    for r in 0..sw {
        for (i, row) in plane.chunks_exact(w).enumerate() {
            let dst = &mut buf[(r * h + i) * wr..][..wr];
            // Past the row's end (the last phases of an odd width) nothing is ever read.
            for (d, v) in dst.iter_mut().zip(row.iter().skip(r).step_by(sw)) {
                *d = *v;
            }
        }
    }
    let out = f(&Phases { data: &buf, h, wr });
    PHASES.with(|b| *b.borrow_mut() = buf);
    out
}

/// Adds one channel's column-gradient rows (`kh * kw`, row length `ld`, from column `offset`)
/// into that channel's input gradient `plane`.
#[inline(always)]
fn col2im_channel(
    s: &ConvShape,
    taps: &Taps,
    rows: &[f32],
    (ld, offset): (usize, usize),
    plane: &mut [f32],
) {
    let [sh, sw] = s.geom.stride;
    let ph = s.geom.padding[0];
    for ki in 0..s.kh {
        for (kj, &(lo, hi, (r, j))) in taps.cols.iter().enumerate() {
            let src = &rows[(ki * s.kw + kj) * ld + offset..][..s.p()];
            let start = j * sw + r;
            for oh in 0..s.ho {
                let ih = (oh * sh + ki) as isize - ph as isize;
                if ih < 0 || ih >= s.h as isize {
                    continue;
                }
                let d = &mut plane[ih as usize * s.w..][..s.w];
                let g = &src[oh * s.wo..][..s.wo];
                for (j, v) in g[lo..hi].iter().enumerate() {
                    d[start + j * sw] += v;
                }
            }
        }
    }
}

/// Writes `count` images from image `first` of `x` as im2col columns side by side into `col`
/// (`[k, count * p]`); over channels in parallel when `wide` (the chunk has the machine).
fn im2col(s: &ConvShape, x: &[f32], first: usize, count: usize, col: &mut [f32], wide: bool) {
    let (ld, plane) = (count * s.p(), s.h * s.w);
    let rows = s.kh * s.kw * ld;
    let taps = Taps::new(s);
    for i in 0..count {
        let image = &x[(first + i) * s.image()..][..s.image()];
        let one = |(c, rows): (usize, &mut [f32])| {
            let (plane, at) = (&image[c * plane..][..plane], i * s.p());
            if s.same() {
                vectorized(
                    #[inline(always)]
                    || im2col_same(s, &taps, plane, rows, (ld, at)),
                )
            } else {
                vectorized(
                    #[inline(always)]
                    || im2col_channel(s, &taps, plane, rows, (ld, at)),
                )
            }
        };
        if wide {
            col.par_chunks_mut(rows).enumerate().for_each(one);
        } else {
            col.chunks_mut(rows).enumerate().for_each(one);
        }
    }
}

/// Sets the `count` images of `dx` to the column gradient `col` (`[k, count * p]`) folded
/// back; over channels in parallel when `wide`.
fn col2im(s: &ConvShape, col: &[f32], count: usize, dx: &mut [f32], wide: bool) {
    let (ld, plane) = (count * s.p(), s.h * s.w);
    let rows = s.kh * s.kw * ld;
    let taps = Taps::new(s);
    for (i, image) in dx.chunks_mut(s.image()).enumerate() {
        image.fill(0.0);
        let at = i * s.p();
        let one = |(plane, rows): (&mut [f32], &[f32])| {
            if s.same() {
                vectorized(
                    #[inline(always)]
                    || col2im_same(s, &taps, rows, (ld, at), plane),
                )
            } else {
                vectorized(
                    #[inline(always)]
                    || col2im_channel(s, &taps, rows, (ld, at), plane),
                )
            }
        };
        if wide {
            image
                .par_chunks_mut(plane)
                .zip(col.par_chunks(rows))
                .for_each(one);
        } else {
            image.chunks_mut(plane).zip(col.chunks(rows)).for_each(one);
        }
    }
}

/// Copies `count` images of `[rows, p]` starting at image `first` side by side into
/// `dst [rows, count * p]`.
fn gather(src: &[f32], rows: usize, p: usize, first: usize, count: usize, dst: &mut [f32]) {
    let ld = count * p;
    for i in 0..count {
        let image = &src[(first + i) * rows * p..][..rows * p];
        for r in 0..rows {
            dst[r * ld + i * p..][..p].copy_from_slice(&image[r * p..][..p]);
        }
    }
}

/// What the forward does to the GEMM's result before writing it: bias per output channel, then a
/// residual (shaped like the output), then ReLU, each when asked.
#[derive(Clone, Copy, Default)]
pub struct Tail<'a> {
    /// Per output channel.
    pub bias: Option<&'a [f32]>,
    /// Added after the bias: the identity path of a residual block.
    pub residual: Option<&'a [f32]>,
    /// ReLU last.
    pub relu: bool,
}

/// Writes the GEMM result into `count` output images `y [o, p]` from image `first`, applying
/// `tail`: from `src [o, count * p]` (images side by side) when given, else in place (one image).
#[inline(always)]
fn epilogue(s: &ConvShape, src: Option<&[f32]>, y: &mut [f32], first: usize, tail: &Tail) {
    let (o, p) = (s.o, s.p());
    let count = y.len() / (o * p);
    for i in 0..count {
        for r in 0..o {
            let at = (i * o + r) * p;
            let out = &mut y[at..][..p];
            let b = tail.bias.map_or(0.0, |b| b[r]);
            let res = tail.residual.map(|res| &res[first * o * p + at..][..p]);
            match src {
                Some(src) => finish_row(out, &src[r * count * p + i * p..][..p], b, res, tail.relu),
                None => finish_row_in_place(out, b, res, tail.relu),
            }
        }
    }
}

/// [`epilogue`] for one image already in place in `y [o, p]`, over output channels in parallel.
fn wide_epilogue(s: &ConvShape, y: &mut [f32], first: usize, tail: &Tail) {
    let (o, p) = (s.o, s.p());
    if tail.bias.is_none() && tail.residual.is_none() && !tail.relu {
        return;
    }
    y.par_chunks_mut(p).enumerate().for_each(|(r, out)| {
        let b = tail.bias.map_or(0.0, |b| b[r]);
        let res = tail.residual.map(|res| &res[(first * o + r) * p..][..p]);
        vectorized(
            #[inline(always)]
            || finish_row_in_place(out, b, res, tail.relu),
        )
    });
}

/// `out = src + b (+ res)`, then ReLU when `relu`: the GEMM result's copy and the tail in one
/// pass; each branch a plain loop that vectorises.
#[inline(always)]
fn finish_row(out: &mut [f32], src: &[f32], b: f32, res: Option<&[f32]>, relu: bool) {
    let act = |z: f32| if relu { super::relu(z) } else { z };
    match res {
        Some(res) => {
            for ((v, x), r) in out.iter_mut().zip(src).zip(res) {
                *v = act(*x + b + r);
            }
        }
        None => {
            for (v, x) in out.iter_mut().zip(src) {
                *v = act(*x + b);
            }
        }
    }
}

/// [`finish_row`] on a row that already holds the GEMM result.
#[inline(always)]
fn finish_row_in_place(out: &mut [f32], b: f32, res: Option<&[f32]>, relu: bool) {
    let act = |z: f32| if relu { super::relu(z) } else { z };
    match res {
        Some(res) => out
            .iter_mut()
            .zip(res)
            .for_each(|(v, r)| *v = act(*v + b + r)),
        None if b != 0.0 || relu => out.iter_mut().for_each(|v| *v = act(*v + b)),
        None => {}
    }
}

/// One chunk of `count` images from image `first`, laid out side by side for its GEMMs.
#[derive(Clone, Copy)]
struct Chunk {
    first: usize,
    count: usize,
    /// Columns of its GEMM operands: `count * p`.
    ld: usize,
    /// One image of a pointwise convolution: the input is its own im2col matrix.
    direct: bool,
}

impl Chunk {
    fn new(s: &ConvShape, first: usize, count: usize) -> Self {
        let direct = s.pointwise() && count == 1;
        Self {
            first,
            count,
            ld: count * s.p(),
            direct,
        }
    }

    /// Scratch it needs: an im2col matrix unless `direct`, and an `[o, ld]` matrix when its
    /// images sit side by side.
    fn scratch(&self, s: &ConvShape) -> (usize, usize) {
        let col = if self.direct { 0 } else { s.k() * self.ld };
        (col, if self.count > 1 { s.o * self.ld } else { 0 })
    }

    /// Its input as the im2col matrix `[k, ld]`: read in place, or written into `col`.
    fn columns<'a>(
        &self,
        s: &ConvShape,
        x: &'a [f32],
        col: &'a mut [f32],
        wide: bool,
    ) -> &'a [f32] {
        if self.direct {
            return &x[self.first * s.image()..][..s.image()];
        }
        im2col(s, x, self.first, self.count, col, wide);
        col
    }

    /// Its output gradient as `[o, ld]`: read in place for one image, else gathered into `buf`.
    fn output_grad<'a>(&self, s: &ConvShape, dy: &'a [f32], buf: &'a mut [f32]) -> &'a [f32] {
        let p = s.p();
        if self.count == 1 {
            return &dy[self.first * s.o * p..][..s.o * p];
        }
        gather(dy, s.o, p, self.first, self.count, buf);
        buf
    }
}

/// `y = conv(x, w)` with `tail` applied, `[n, o, ho, wo]`.
pub fn forward(s: &ConvShape, x: &[f32], w: &[f32], tail: &Tail) -> Vec<f32> {
    let (k, p) = (s.k(), s.p());
    let plan = Plan::new(s);
    // Each chunk writes its images in full (the GEMM or the epilogue's copy, then the tail).
    let mut y = Output::new(s.n * s.o * p);
    let out = y.shared();
    plan.for_each(s.n, |first, count| {
        let c = Chunk::new(s, first, count);
        let (col_len, tmp_len) = c.scratch(s);
        let ld = c.ld;
        with_scratch(col_len, tmp_len, |col, tmp| {
            let src = Mat::rows(c.columns(s, x, col, plan.wide), ld);
            // SAFETY: this chunk owns output images [first, first + count).
            let y = unsafe { out.slice(first * s.o * p, count * s.o * p) };
            let dst = if count == 1 {
                y.as_mut_ptr()
            } else {
                tmp.as_mut_ptr()
            };
            // SAFETY: w is [o, k], src is [k, ld], dst is [o, ld]; all in bounds, disjoint.
            unsafe {
                matmul(
                    [s.o, ld, k],
                    dst,
                    ld,
                    false,
                    Mat::rows(w, k),
                    src,
                    plan.gemm,
                )
            };
            if plan.wide && count == 1 {
                // The chunk has the machine: split the epilogue over output channels too, or
                // the other threads wait through it (batch 1 at 224 px: 800k values a layer).
                wide_epilogue(s, y, first, tail);
            } else {
                let src = (count > 1).then_some(&*tmp);
                vectorized(
                    #[inline(always)]
                    || epilogue(s, src, y, first, tail),
                );
            }
        });
    });
    // SAFETY: the chunks cover the batch.
    unsafe { y.assume_init() }
}

/// Gradient of the input, `[n, c, h, w]`, from the output gradient `dy` `[n, o, ho, wo]`.
pub fn x_backward(s: &ConvShape, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let k = s.k();
    let plan = Plan::new(s);
    // Each chunk writes its images in full (the GEMM in place, or zeroed then folded back).
    let mut dx = Output::new(s.n * s.image());
    let out = dx.shared();
    plan.for_each(s.n, |first, count| {
        let c = Chunk::new(s, first, count);
        let (col_len, gather_len) = c.scratch(s);
        let (ld, direct) = (c.ld, c.direct);
        with_scratch(col_len, gather_len, |dcol, dyg| {
            let dym = Mat::rows(c.output_grad(s, dy, dyg), ld);
            // SAFETY: this chunk owns input-gradient images [first, first + count).
            let dx = unsafe { out.slice(first * s.image(), count * s.image()) };
            let wt = Mat::transposed(w, k);
            let dst = if direct {
                dx.as_mut_ptr()
            } else {
                dcol.as_mut_ptr()
            };
            // SAFETY: wt is [k, o], dym is [o, ld], dst is [k, ld]; all in bounds, disjoint.
            unsafe { matmul([k, ld, s.o], dst, ld, false, wt, dym, plan.gemm) };
            if !direct {
                col2im(s, dcol, count, dx, plan.wide);
            }
        });
    });
    // SAFETY: the chunks cover the batch.
    unsafe { dx.assume_init() }
}

/// Gradient of the weight, `[o, c, kh, kw]`: the sum over images of `dy_i * im2col(x_i)^T`.
pub fn weight_backward(s: &ConvShape, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let k = s.k();
    let plan = Plan::new(s);
    // The first chunk of a run writes the accumulator, the others add to it.
    let accumulate = |acc: Option<Vec<f32>>, first: usize, count: usize| {
        let c = Chunk::new(s, first, count);
        let (col_len, gather_len) = c.scratch(s);
        let ld = c.ld;
        let gemm = |dst: *mut f32, add: bool| {
            with_scratch(col_len, gather_len, |col, dyg| {
                let colt = Mat::transposed(c.columns(s, x, col, plan.wide), ld);
                let dym = Mat::rows(c.output_grad(s, dy, dyg), ld);
                // SAFETY: dym is [o, ld], colt is [ld, k], dst is [o, k]; in bounds, disjoint.
                unsafe { matmul([s.o, k, ld], dst, k, add, dym, colt, plan.gemm) };
            })
        };
        match acc {
            Some(mut acc) => {
                gemm(acc.as_mut_ptr(), true);
                acc
            }
            None => {
                let mut out = Output::new(s.o * k);
                gemm(out.shared().0, false);
                // SAFETY: the GEMM wrote every element of `[o, k]`.
                unsafe { out.assume_init() }
            }
        }
    };
    if plan.chunks == 1 {
        return accumulate(None, 0, s.n);
    }
    // One accumulator per thread over a fixed run of chunks, summed in a fixed order: the same
    // bits on every run (rayon's fold would split, and so sum, differently each time).
    let groups = plan.chunks.min(rayon::current_num_threads().max(1));
    let partials: Vec<Vec<f32>> = (0..groups)
        .into_par_iter()
        .map(|g| {
            let chunks = g * plan.chunks / groups..(g + 1) * plan.chunks / groups;
            let acc = chunks.fold(None, |acc, i| {
                let (first, count) = plan.chunk(i, s.n);
                Some(accumulate(acc, first, count))
            });
            acc.expect("every group has at least one chunk: groups <= chunks")
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut total = parts.next().expect("at least one group");
    for part in parts {
        // Elementwise, so splitting it over threads keeps the order of every element's sum.
        total
            .par_chunks_mut(REDUCE_CHUNK)
            .zip(part.par_chunks(REDUCE_CHUNK))
            .for_each(|(t, p)| {
                vectorized(
                    #[inline(always)]
                    || t.iter_mut().zip(p).for_each(|(t, p)| *t += p),
                )
            });
    }
    total
}

/// Values per task when adding per-thread weight gradients: large enough to amortise a task.
const REDUCE_CHUNK: usize = 1 << 14;
