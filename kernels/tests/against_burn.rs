//! Our kernels against Burn's operations on random shapes (every ResNet shape is checked by the
//! model's tests, which know the network). On flex only: our kernels run there.
#![cfg(feature = "flex")]

use proptest::prelude::*;
use rekindle_kernels::parity::{Case, check_batch_norm, check_max_pool};
use rekindle_kernels::{ConvGeom, PoolGeom};

fn case([n, c, o, k, s, size]: [usize; 6]) -> Case {
    Case {
        x: [n, c, size, size],
        w: [o, c, k, k],
        geom: ConvGeom {
            stride: [s, s],
            padding: [k / 2, k / 2],
        },
    }
}

/// Batch 1, a batch below and one above the thread count take every parallel path; 1x1 stride 1
/// reads the input in place, small maps are folded into wide chunks, and large ones (24x24) give
/// one chunk per image, so a thread sums the weight gradient over several chunks.
#[test]
fn batch_sizes_take_every_path() {
    for n in [1, 3, 9] {
        case([n, 16, 8, 3, 2, 9]).check();
        case([n, 16, 8, 1, 1, 5]).check();
        case([n, 16, 8, 1, 2, 5]).check();
        case([n, 32, 8, 3, 1, 1]).check();
        case([n, 4, 4, 3, 1, 24]).check();
        case([n, 4, 4, 1, 1, 24]).check();
        // The ResNet stem's pooling.
        let stem = PoolGeom {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
        };
        check_max_pool([n, 4, 16, 16], stem);
    }
}

/// A fused ReLU lets NaN through, as Burn's (and PyTorch's) does: a diverged run must show NaN,
/// not zeros. Forward of conv + bias (+ residual) and of BatchNorm, and BatchNorm's gradient.
#[test]
fn fused_relu_propagates_nan() {
    use burn::tensor::{Device, Tensor};
    use rekindle_kernels::{batch_norm_train, conv2d_bias};
    let device = Device::flex();
    let nan_at_0 = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().expect("f32")[0].is_nan();
    let x = Tensor::<4>::ones([1, 1, 3, 3], &device);
    let w = Tensor::<4>::ones([1, 1, 1, 1], &device);
    let bias = Tensor::<1>::from_floats([f32::NAN], &device);
    let geom = ConvGeom {
        stride: [1, 1],
        padding: [0, 0],
    };
    for residual in [None, Some(x.clone())] {
        let y = conv2d_bias(x.clone(), w.clone(), bias.clone(), residual, geom, true);
        assert!(nan_at_0(y), "conv + bias + relu");
    }
    let gamma = Tensor::<1>::from_floats([f32::NAN], &device);
    let beta = Tensor::<1>::zeros([1], &device);
    let x = Tensor::<4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &device);
    let r = batch_norm_train(x.clone(), gamma.clone(), beta, None, 1e-5, true);
    assert!(nan_at_0(r.output.clone()), "batch norm + relu");
    let g = rekindle_kernels::batch_norm_train_backward(
        x.clone(),
        gamma,
        (r.mean, r.variance),
        1e-5,
        Tensor::<4>::ones([1, 1, 2, 2], &device),
        Some(r.output),
    );
    let sum = g.sum.into_data().try_to_vec::<f32>().expect("f32");
    assert_eq!(
        sum, [1.0; 4],
        "the ReLU mask keeps the gradient where the output is NaN"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any geometry the kernels accept: odd sizes, strides past the kernel, padding, batch 1.
    #[test]
    fn random_convolutions_match_burn(
        n in 1usize..4, c in 1usize..6, o in 1usize..6,
        kh in 1usize..5, kw in 1usize..5, sh in 1usize..4, sw in 1usize..4,
        ph in 0usize..3, pw in 0usize..3, h in 1usize..12, w in 1usize..12,
    ) {
        prop_assume!(h + 2 * ph >= kh && w + 2 * pw >= kw);
        let geom = ConvGeom { stride: [sh, sw], padding: [ph, pw] };
        Case { x: [n, c, h, w], w: [o, c, kh, kw], geom }.check();
    }

    /// Stride 1 with "same" padding (odd kernels padded by half), which copies shifted planes
    /// instead of rows: maps from 1x1 (all padding) up, square or not.
    #[test]
    fn random_same_size_convolutions_match_burn(
        n in 1usize..4, c in 1usize..6, o in 1usize..6,
        kh in 0usize..3, kw in 0usize..3, h in 1usize..12, w in 1usize..12,
    ) {
        let (kh, kw) = (2 * kh + 1, 2 * kw + 1);
        let geom = ConvGeom { stride: [1, 1], padding: [kh / 2, kw / 2] };
        Case { x: [n, c, h, w], w: [o, c, kh, kw], geom }.check();
    }

    /// Max pooling on random geometries, padding up to half the window as PyTorch allows.
    #[test]
    fn random_max_pools_match_burn(
        n in 1usize..3, c in 1usize..4, kh in 1usize..4, kw in 1usize..4,
        sh in 1usize..4, sw in 1usize..4, ph in 0usize..2, pw in 0usize..2,
        h in 1usize..12, w in 1usize..12,
    ) {
        prop_assume!(2 * ph <= kh && 2 * pw <= kw && h + 2 * ph >= kh && w + 2 * pw >= kw);
        let geom = PoolGeom { kernel: [kh, kw], stride: [sh, sw], padding: [ph, pw] };
        check_max_pool([n, c, h, w], geom);
    }

    /// BatchNorm on random shapes, including a single value per channel.
    #[test]
    fn random_batch_norms_match_burn(n in 1usize..5, c in 1usize..6, h in 1usize..9, w in 1usize..9) {
        check_batch_norm([n, c, h, w]);
    }
}
