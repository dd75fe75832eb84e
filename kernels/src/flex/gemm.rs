//! One call shape for the gemm crate (the one burn-flex multiplies with): row-major operands
//! described by their strides, so transposed operands are read in place, never copied.

pub use gemm::Parallelism;

/// A read-only matrix operand: where it starts and how far apart its rows and columns are.
#[derive(Clone, Copy)]
pub struct Mat {
    /// First element.
    pub ptr: *const f32,
    /// Elements between consecutive rows.
    pub row: usize,
    /// Elements between consecutive columns.
    pub col: usize,
}

impl Mat {
    /// A row-major matrix with `ld` elements per row.
    pub fn rows(data: &[f32], ld: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            row: ld,
            col: 1,
        }
    }

    /// The transpose of a row-major matrix with `ld` elements per row.
    pub fn transposed(data: &[f32], ld: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            row: 1,
            col: ld,
        }
    }
}

/// `dst[m x n] = (acc ? dst : 0) + a[m x k] * b[k x n]`; `dst` is row-major with `ld_dst`.
///
/// # Safety
/// `a`, `b` must be readable and `dst` writable over the extents their strides describe, and
/// `dst` must overlap neither.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    ld_dst: usize,
    acc: bool,
    a: Mat,
    b: Mat,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: forwarded from the caller; gemm computes `alpha * dst + beta * a * b` and reads
    // dst only when `acc`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            ld_dst as isize,
            acc,
            a.ptr,
            a.col as isize,
            a.row as isize,
            b.ptr,
            b.col as isize,
            b.row as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}
