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

/// Whether `t`'s device is Flex without autodiff: where [`join`] and [`on_pool`] use the CPU
/// pool, and where work split into independent pieces runs faster than batched.
pub fn cpu_pool(t: &Tensor<4>) -> bool {
    kernels(t) == Kernels::Flex && !t.device().is_autodiff()
}

/// `(a(), b())`, both at once on the CPU pool where `t`'s device is Flex without autodiff;
/// one after the other elsewhere (a GPU queues both anyway, and autodiff graphs are built by one
/// thread in this crate). Independent branches of a network on small maps leave cores idle
/// inside each convolution: running them side by side fills those cores.
pub fn join<A: Send, B: Send>(
    t: &Tensor<4>,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    #[cfg(feature = "flex")]
    if cpu_pool(t) {
        return rayon::join(a, b);
    }
    let _ = t;
    (a(), b())
}

/// `f()`, run on one of the CPU pool's threads where `t`'s device is Flex without autodiff
/// (in place elsewhere). Each parallel op called from outside the pool hands its work to a
/// pool thread and waits for it, and a network makes over a hundred such calls; from inside,
/// the calling thread works on its share at once.
pub fn on_pool<R: Send>(t: &Tensor<4>, f: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "flex")]
    if cpu_pool(t) {
        return rayon::scope(|_| f());
    }
    let _ = t;
    f()
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;

    #[test]
    fn join_and_on_pool_return_their_results_on_every_device() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            let t = Tensor::<4>::ones([1, 1, 2, 2], &device);
            let (a, b) = join(&t, || t.clone().sum().into_scalar::<f32>(), || "b");
            assert_eq!((a, b), (4.0, "b"));
            assert_eq!(on_pool(&t, || t.clone().sum().into_scalar::<f32>()), 4.0);
            assert_eq!(cpu_pool(&t), !device.is_autodiff());
        }
    }
}
