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

/// A buffer whose values start on a 64-byte boundary: a cache line, and one AVX-512 vector, so
/// that vector loads at multiples of 64 bytes from its start never straddle two lines. A
/// `Vec`'s allocation is only as aligned as the allocator makes it (16 bytes from glibc): the
/// bfloat16 kernels read their packed kernels and blocks 64 bytes at a time, and a process
/// whose buffers happened to start mid-line ran Market G's bfloat16 pass about 1.3x slower
/// throughout.
pub(crate) struct Aligned<T> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    /// Values of spare room, to move the start to the boundary.
    const SPARE: usize = 64 / std::mem::size_of::<T>();

    /// An empty buffer (no allocation).
    pub(crate) const fn new() -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            len: 0,
        }
    }

    /// `len` default values (zeros), from a 64-byte boundary.
    pub(crate) fn zeroed(len: usize) -> Self {
        let buf = vec![T::default(); len + Self::SPARE];
        let start = buf.as_ptr().align_offset(64).min(Self::SPARE);
        Self { buf, start, len }
    }

    /// At least `len` values: a new zeroed buffer when it holds fewer (contents not kept: for
    /// scratch that is overwritten).
    pub(crate) fn grow(&mut self, len: usize) {
        if self.len < len {
            *self = Self::zeroed(len);
        }
    }
}

impl<T> std::ops::Deref for Aligned<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl<T> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.start..self.start + self.len]
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every buffer starts on a 64-byte boundary, holds zeros, and grows (only) when asked for
    /// more.
    #[test]
    fn aligned_buffers_start_on_a_cache_line() {
        for len in [1, 15, 16, 17, 1000, 4099] {
            for _ in 0..4 {
                let b = Aligned::<f32>::zeroed(len);
                assert_eq!((b.as_ptr() as usize % 64, b.len()), (0, len));
                assert!(b.iter().all(|&v| v == 0.0));
            }
        }
        let mut b = Aligned::<u32>::new();
        assert!(b.is_empty());
        b.grow(100);
        b[99] = 7;
        b.grow(50);
        assert_eq!((b.len(), b[99], b.as_ptr() as usize % 64), (100, 7, 0));
        b.grow(300);
        assert_eq!((b.len(), b.as_ptr() as usize % 64), (300, 0));
    }
}
