//! Which of this crate's own kernels a tensor's device runs: the one place that looks at Burn's
//! dispatch device, so that the feature gates live here only.

use burn::tensor::Tensor;

/// The kernel family a device has in this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernels {
    /// The Flex CPU backend (feature `flex`).
    Flex,
    /// A CubeCL runtime: wgpu, CUDA (feature `cube`).
    Cube,
    /// Anything else: the composed tensor ops run.
    None,
}

/// The kernels of `t`'s device, looking through autodiff.
pub(crate) fn kernels<const D: usize>(t: &Tensor<D>) -> Kernels {
    #[cfg(any(feature = "flex", feature = "cube"))]
    {
        use burn::backend::DispatchDevice;
        match t.device().inner().as_dispatch() {
            #[cfg(feature = "flex")]
            DispatchDevice::Flex(_) => Kernels::Flex,
            #[cfg(feature = "cube")]
            DispatchDevice::Cube(_) => Kernels::Cube,
            #[allow(unreachable_patterns)]
            _ => Kernels::None,
        }
    }
    #[cfg(not(any(feature = "flex", feature = "cube")))]
    {
        let _ = t;
        Kernels::None
    }
}
