//! AVX-512 helpers the convolutions' transforms and direct kernels share: lane masks for runs
//! that start or end inside a vector, and strided picks out of unaligned row loads.

use std::arch::x86_64::*;

/// Lanes `l < 16` with `0 <= start + l < len`: the part of a 16-value load or store from
/// `start` that lies inside a run of `len` values (a row, a block's tiles).
#[inline(always)]
pub(super) fn inside(start: isize, len: usize) -> __mmask16 {
    let lo = (-start).clamp(0, 16);
    let hi = (len as isize - start).clamp(0, 16);
    if hi <= lo {
        0
    } else {
        ((((1u32 << hi) - 1) >> lo) << lo) as __mmask16
    }
}

/// 64 values of `row` (`w` long) from `start`, zero outside it, as four vectors.
///
/// # Safety
/// The CPU has AVX-512F; `row` points to `w` readable values (only those are read).
#[inline(always)]
pub(super) unsafe fn row_run(row: *const f32, start: isize, w: usize) -> [__m512; 4] {
    // SAFETY: the caller's CPU has AVX-512F; only the lanes inside the row are read.
    std::array::from_fn(|k| unsafe {
        let at = start + 16 * k as isize;
        _mm512_maskz_loadu_ps(inside(at, w), row.wrapping_offset(at))
    })
}

/// `[o, o + 4, .., o + 28]` in the low eight lanes: [`every_fourth`]'s pick from offset `o`.
#[inline(always)]
pub(super) fn fourth(o: i32) -> __m512i {
    // SAFETY: a register-only operation of AVX-512F, which the callers enable.
    unsafe {
        _mm512_setr_epi32(
            o,
            o + 4,
            o + 8,
            o + 12,
            o + 16,
            o + 20,
            o + 24,
            o + 28,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        )
    }
}

/// Every fourth value of `run` ([`row_run`]) from the offset `pick` was made for
/// ([`fourth`]): each pair of vectors permuted, the two halves joined.
#[inline(always)]
pub(super) fn every_fourth(run: &[__m512; 4], pick: __m512i) -> __m512 {
    // SAFETY: register-only operations of AVX-512F, which the callers enable.
    unsafe {
        let low = _mm512_permutex2var_ps(run[0], pick, run[1]);
        let high = _mm512_permutex2var_ps(run[2], pick, run[3]);
        _mm512_shuffle_f32x4::<0b01_00_01_00>(low, high)
    }
}
