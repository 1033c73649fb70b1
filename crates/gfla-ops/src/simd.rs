//! What the CPU kernels of `conv`, `fused` and `norm` share: run-time selection of AVX2 code,
//! a vectorised dot product, buffers zeroed by all threads, an output that parallel tasks write at disjoint positions,
//! and Flex tensors as slices and back.

/// Compiles `$body` twice, generically and with AVX2 + FMA enabled, and picks at run time.
/// The body is `#[inline(always)]` so the target features apply to everything inlined into it;
/// closures in it are functions of their own, compiled without them.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    generic($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has just been checked for the enabled features.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

/// `sum f(x)` with eight partial sums, so that the reduction vectorises.
#[inline(always)]
pub(crate) fn sum8(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let (chunks, rest) = x.as_chunks::<8>();
    for chunk in chunks {
        for l in 0..8 {
            acc[l] += f(chunk[l]);
        }
    }
    acc.iter().sum::<f64>() + rest.iter().map(|&v| f(v)).sum::<f64>()
}

/// `len` zeros written by all threads: a `memset` of large padded copies and outputs on the
/// calling thread alone was a visible serial part of a generator's forward.
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()
        .par_chunks_mut(1 << 16)
        .for_each(|chunk| chunk.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: all `len` elements were just written.
    unsafe { v.set_len(len) };
    v
}

/// Contiguous `f32` values of a Flex tensor (copied only when it is a strided view).
pub(crate) fn values(t: &burn::backend::flex::FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().unwrap().to_vec()),
    }
}

/// A Flex tensor owning `values`.
pub(crate) fn tensor(
    values: Vec<f32>,
    shape: impl Into<burn::tensor::Shape>,
) -> burn::backend::flex::FlexTensor {
    burn::backend::flex::FlexTensor::from_data(burn::tensor::TensorData::new(values, shape.into()))
}

/// An output buffer that parallel tasks write through at disjoint positions.
#[derive(Clone, Copy)]
pub(crate) struct Disjoint(pub(crate) *mut f32);

// SAFETY: every user gives each task positions no other task writes (its cells, rows, channel
// blocks or phases), so no position is written twice.
unsafe impl Send for Disjoint {}
unsafe impl Sync for Disjoint {}

impl Disjoint {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `a . b` with eight partial sums, so that it vectorises without reassociation licence, and
/// `mul_add`, which Rust never forms from `a * b + c` itself (an FMA in the AVX2 copies that
/// `multiversion!` compiles). Call it from the body itself, not from a closure there: a closure
/// is compiled without the body's target features, and its `mul_add` becomes a call to `fmaf`.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for l in 0..8 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}
