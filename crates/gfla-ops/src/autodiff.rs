//! What the hand-written backward passes of `conv` and `fused` share.

use burn::backend::Backend;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::Ops;
use burn::backend::tensor::FloatTensor;

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
