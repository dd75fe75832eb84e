//! The extension's operations under `Autodiff`: each forward is recorded with a backward that
//! calls the inner backend's gradient kernels, the way burn-autodiff records its own convolution
//! and BatchNorm, so flex's gradients run our kernels too.

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;

use crate::extension::{BnTrain, ConvGeom, KernelBackend};

#[derive(Debug)]
struct ConvBackward;

impl<B: KernelBackend> Backward<B, 2> for ConvBackward {
    type State = (NodeId, NodeId, ConvGeom);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, w_state, geom) = ops.state;
        let x = cp.retrieve_node_output::<FloatTensor<B>>(x_state);
        let w = cp.retrieve_node_output::<FloatTensor<B>>(w_state);
        if let Some(node) = node_x {
            let dx = B::rk_conv2d_x_backward(x.clone(), w.clone(), grad.clone(), geom);
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, B::rk_conv2d_weight_backward(x, w, grad, geom));
        }
    }
}

#[derive(Debug)]
struct BnBackward;

impl<B: KernelBackend> Backward<B, 3> for BnBackward {
    // The input and gamma are checkpointed; the batch statistics come along as computed.
    type State = (NodeId, NodeId, FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, gamma_state, mean, variance, epsilon) = ops.state;
        let x = cp.retrieve_node_output::<FloatTensor<B>>(x_state);
        let gamma = cp.retrieve_node_output::<FloatTensor<B>>(gamma_state);
        let g = B::rk_batch_norm_train_backward(x, gamma, mean, variance, epsilon, grad);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, g.x);
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, g.gamma);
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, g.beta);
        }
    }
}

impl<B: KernelBackend, C: CheckpointStrategy> KernelBackend for Autodiff<B, C> {
    fn rk_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geom: ConvGeom,
    ) -> FloatTensor<Self> {
        let prep = ConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let w_state = prep.checkpoint(&weight);
                let out = B::rk_conv2d(x.into_primitive(), weight.into_primitive(), geom);
                prep.finish((x_state, w_state, geom), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rk_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                geom,
            )),
        }
    }

    fn rk_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> BnTrain<Self> {
        let prep = BnBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = prep.checkpoint(&gamma);
                let r = B::rk_batch_norm_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                let state = (
                    x_state,
                    gamma_state,
                    r.mean.clone(),
                    r.variance.clone(),
                    epsilon,
                );
                BnTrain {
                    output: prep.finish(state, r.output),
                    mean: FloatTensor::<Self>::new(r.mean),
                    variance: FloatTensor::<Self>::new(r.variance),
                }
            }
            OpsKind::UnTracked(prep) => {
                let r = B::rk_batch_norm_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                BnTrain {
                    output: prep.finish(r.output),
                    mean: FloatTensor::<Self>::new(r.mean),
                    variance: FloatTensor::<Self>::new(r.variance),
                }
            }
        }
    }
}
