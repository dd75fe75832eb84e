//! Our kernels against Burn's own operations on the same device, forward and both gradients:
//! what the tests of this crate and of the model run on random and on every ResNet shape.
//!
//! Burn's gradients come from its autodiff of its own ops (`conv2d`, `batch_norm_train`); ours
//! both from the kernels called directly and from our ops under autodiff.

use burn::tensor::module::{batch_norm_train as burn_batch_norm, conv2d as burn_conv2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};

use crate::{ConvGeom, batch_norm_train, conv2d, conv2d_bias};

/// Asserts elementwise closeness within 1e-4 of the reference's largest magnitude: sums reordered
/// over thousands of terms differ by a few ulps of the largest partial sum, not of each element.
pub fn assert_close<const D: usize>(got: Tensor<D>, want: Tensor<D>, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let got = got.into_data().try_into_vec::<f32>().expect("f32");
    let want = want.into_data().try_into_vec::<f32>().expect("f32");
    // Floored at 1e-2 (an absolute 1e-6): a reference that is all rounding noise, like the input
    // gradient of a BatchNorm over two values (exactly zero in exact arithmetic), has no scale.
    let scale = want.iter().fold(1e-2f32, |m, v| m.max(v.abs()));
    let (worst, at) = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .enumerate()
        .fold(
            (0.0f32, 0),
            |(m, at), (i, d)| if d > m { (d, i) } else { (m, at) },
        );
    assert!(
        worst <= 1e-4 * scale,
        "{what}: |got - want| = {worst:e} at {at} (got {}, want {}), reference scale {scale:e}",
        got[at],
        want[at]
    );
}

/// A standard-normal tensor.
pub fn random<const D: usize>(dims: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(dims, Distribution::Normal(0.0, 1.0), device)
}

/// One convolution case: input dims, weight dims and geometry.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Input dimensions.
    pub x: [usize; 4],
    /// Weight dimensions.
    pub w: [usize; 4],
    /// Stride and padding.
    pub geom: ConvGeom,
}

impl Case {
    fn options(&self) -> ConvOptions<2> {
        ConvOptions::new(self.geom.stride, self.geom.padding, [1, 1], 1)
    }

    /// Panics, naming the case and the worst element, unless ours equals Burn's.
    pub fn check(&self) {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let x = random(self.x, &device);
        let w = random(self.w, &device);
        let b = random([self.w[0]], &device);

        // Forward, plain and with bias + ReLU.
        let want = burn_conv2d(x.clone(), w.clone(), None, self.options());
        let dy = random(want.dims(), &device);
        assert_close(
            conv2d(x.clone(), w.clone(), self.geom),
            want.clone(),
            &format!("{self:?} forward"),
        );
        let want_b = burn_conv2d(x.clone(), w.clone(), Some(b.clone()), self.options());
        assert_close(
            conv2d_bias(x.clone(), w.clone(), b, self.geom, true),
            burn::tensor::activation::relu(want_b),
            &format!("{self:?} forward + bias + relu"),
        );

        // Burn's gradients: autodiff of its own convolution.
        let xa = Tensor::from_data(x.to_data(), &ad).require_grad();
        let wa = Tensor::from_data(w.to_data(), &ad).require_grad();
        let grads = (burn_conv2d(xa.clone(), wa.clone(), None, self.options())
            * dy.clone().to_device(&ad))
        .sum()
        .backward();
        let want_dx = xa.grad(&grads).expect("x grad");
        let want_dw = wa.grad(&grads).expect("w grad");

        // Ours, called directly.
        let dx = crate::conv2d_x_backward(x.clone(), w.clone(), dy.clone(), self.geom);
        let dw = crate::conv2d_weight_backward(x.clone(), w.clone(), dy.clone(), self.geom);
        assert_close(dx, want_dx.clone(), &format!("{self:?} x gradient"));
        assert_close(dw, want_dw.clone(), &format!("{self:?} weight gradient"));

        // Ours under autodiff.
        let xo = Tensor::from_data(x.to_data(), &ad).require_grad();
        let wo = Tensor::from_data(w.to_data(), &ad).require_grad();
        let grads = (conv2d(xo.clone(), wo.clone(), self.geom)
            * Tensor::from_data(dy.to_data(), &ad))
        .sum()
        .backward();
        assert_close(
            xo.grad(&grads).expect("x grad"),
            want_dx,
            &format!("{self:?} autodiff x gradient"),
        );
        assert_close(
            wo.grad(&grads).expect("w grad"),
            want_dw,
            &format!("{self:?} autodiff weight gradient"),
        );
    }
}

/// Checks BatchNorm over `dims` (`[n, c, h, w]`) against Burn, output, statistics and gradients.
pub fn check_batch_norm(dims: [usize; 4]) {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let c = dims[1];
    // An offset mean and a non-unit spread, as activations have.
    let x = random(dims, &device).mul_scalar(3.0).add_scalar(1.5);
    let gamma = random([c], &device);
    let beta = random([c], &device);
    let dy = random(dims, &device);
    let what = format!("batch norm {dims:?}");

    let want = burn_batch_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5);
    let got = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
    assert_close(got.output, want.output, &format!("{what} output"));
    assert_close(got.mean.clone(), want.mean, &format!("{what} mean"));
    assert_close(
        got.variance.clone(),
        want.variance,
        &format!("{what} variance"),
    );

    let leaf = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &ad).require_grad();
    let leaf1 = |t: &Tensor<1>| Tensor::<1>::from_data(t.to_data(), &ad).require_grad();
    let (xb, gb, bb) = (leaf(&x), leaf1(&gamma), leaf1(&beta));
    let dya = Tensor::<4>::from_data(dy.to_data(), &ad);
    let grads = (burn_batch_norm(xb.clone(), gb.clone(), bb.clone(), 1e-5).output * dya.clone())
        .sum()
        .backward();
    let want = [
        xb.grad(&grads),
        gb.grad(&grads).map(|g| g.unsqueeze()),
        bb.grad(&grads).map(|g| g.unsqueeze()),
    ];

    let (xo, go, bo) = (leaf(&x), leaf1(&gamma), leaf1(&beta));
    let grads = (batch_norm_train(xo.clone(), go.clone(), bo.clone(), 1e-5).output * dya)
        .sum()
        .backward();
    let ours = [
        xo.grad(&grads),
        go.grad(&grads).map(|g| g.unsqueeze()),
        bo.grad(&grads).map(|g| g.unsqueeze()),
    ];
    let direct = crate::batch_norm_train_backward(x, gamma, (got.mean, got.variance), 1e-5, dy);
    let direct = [direct.0, direct.1.unsqueeze(), direct.2.unsqueeze()];
    for (i, name) in ["x", "gamma", "beta"].into_iter().enumerate() {
        let want: Tensor<4> = want[i].clone().expect("Burn's gradient");
        assert_close(
            ours[i].clone().expect("our gradient"),
            want.clone(),
            &format!("{what} autodiff {name} gradient"),
        );
        assert_close(direct[i].clone(), want, &format!("{what} {name} gradient"));
    }
}
