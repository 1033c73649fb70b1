//! What the hand-written backward passes of `conv` and `fused` share.

use burn::backend::Backend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;

/// Runs `forward` as an autodiff op of `inputs`: when one of them is tracked, all are
/// checkpointed and `backward` is recorded with their ids and `state` (what
/// [`backward_step`] gets back). `C`, the checkpoint strategy, is named by the caller: the
/// tensors do not carry it.
pub(crate) fn record<C, B, BW, S, const N: usize>(
    backward: BW,
    inputs: [&FloatTensor<Autodiff<B, C>>; N],
    state: S,
    forward: impl FnOnce() -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>>
where
    B: Backend,
    C: CheckpointStrategy,
    BW: Backward<B, N, State = ([NodeId; N], S)>,
    S: Clone + Send + core::fmt::Debug + 'static,
{
    match backward
        .prepare::<C>(inputs.map(|t| t.node()))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let ids = inputs.map(|t| prep.checkpoint(t));
            prep.finish((ids, state), forward())
        }
        OpsKind::UnTracked(prep) => prep.finish(forward()),
    }
}

/// The backward step every hand-written `Backward` of this crate shares: the op's `N` inputs
/// come back from the checkpointer, `grads_of(inputs, upstream, state, wanted)` computes what
/// the tracked parents need, and each gradient is registered.
pub(crate) fn backward_step<B: Backend, S, const N: usize>(
    ops: Ops<([NodeId; N], S), N>,
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
    grads_of: impl FnOnce(
        [FloatTensor<B>; N],
        FloatTensor<B>,
        S,
        [bool; N],
    ) -> [Option<FloatTensor<B>>; N],
) {
    let grad = grads.consume::<B>(&ops.node);
    let (ids, state) = ops.state;
    let inputs = ids.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
    let want = ops.parents.each_ref().map(Option::is_some);
    let computed = grads_of(inputs, grad, state, want);
    for (node, g) in ops.parents.into_iter().zip(computed) {
        if let (Some(node), Some(g)) = (node, g) {
            grads.register::<B>(node.id, g);
        }
    }
}
