//! Prepared kernels kept between calls, for weights that need no gradient.
//!
//! Preparing a kernel (reordering it into the GEMM's kernel matrix, splitting it into the
//! phases of a transposed convolution, or Winograd-transforming it) reads and writes the whole
//! weight. On Market's small maps that cost about as much as the products themselves, on
//! every call. A weight that needs no gradient (inference, a frozen VGG) is prepared once per
//! geometry and kept here, keyed by its storage.
//!
//! Why a storage match means the same values: an entry holds a strong reference to the
//! weight's storage, so Flex never writes into it in place (it does so only for a tensor that
//! is the sole owner of its storage), and its address is not reused while the entry lives.
//! An entry whose weight nobody else holds any more is dropped at the next insertion.

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard};

use burn::backend::flex::FlexTensor;

use super::cpu::{ConvGeometry, TransposedGeometry};

/// The default limit of [`set_kernel_cache_limit`]: 512 MiB. The generators' prepared kernels
/// take 70 MiB (Market) and 82 MiB (DeepFashion), 106 and 124 MiB with their bfloat16 pairs
/// ([`super::set_bf16_products`]), a frozen VGG19's for the perceptual losses 193 MiB at
/// 256 x 176 (forward and input gradient).
pub const DEFAULT_KERNEL_CACHE_LIMIT: usize = 512 << 20;

/// What a kernel was prepared for: a geometry, whatever the batch. A prepared kernel computes
/// its layer for any batch (the batch only weighs in the choice of algorithm, made at the
/// first), so a network run at several batch sizes, training and validating, keeps one set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Conv(ConvGeometry),
    Transposed(TransposedGeometry),
    /// The attention's sampled convolution ([`crate::sampled_convolution`]): its weight's
    /// `[k*k*C, O]` rows.
    Sampled {
        rows: usize,
        out_channels: usize,
    },
}

impl Purpose {
    pub(super) fn conv(g: &ConvGeometry) -> Self {
        let mut g = *g;
        g.input[0] = 0;
        Self::Conv(g)
    }

    pub(super) fn transposed(g: &TransposedGeometry) -> Self {
        let mut g = *g;
        g.input[0] = 0;
        Self::Transposed(g)
    }
}

struct Entry {
    /// Holds the storage (see the module's documentation).
    weight: FlexTensor,
    storage: usize,
    purpose: Purpose,
    kernel: Arc<dyn Any + Send + Sync>,
    /// The kernel's bytes now: a kernel may grow after it is kept (its bfloat16 pairs are
    /// made at its first product in bfloat16), so sizes are counted when needed, not once.
    bytes: Box<dyn Fn() -> usize + Send>,
    last_use: u64,
}

struct Cache {
    entries: Vec<Entry>,
    clock: u64,
    limit: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache::new(DEFAULT_KERNEL_CACHE_LIMIT));

fn lock(cache: &Mutex<Cache>) -> MutexGuard<'_, Cache> {
    // The cache holds no invariant a panicking holder could break halfway.
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

fn cache() -> MutexGuard<'static, Cache> {
    lock(&CACHE)
}

impl Cache {
    const fn new(limit: usize) -> Self {
        Self {
            entries: Vec::new(),
            clock: 0,
            limit,
        }
    }

    /// Bytes of the kernels held now.
    fn bytes(&self) -> usize {
        self.entries.iter().map(|e| (e.bytes)()).sum()
    }

    /// The entry for `weight` and `purpose`, marked as used now.
    fn find<K: Any + Send + Sync>(
        &mut self,
        weight: &FlexTensor,
        storage: usize,
        purpose: Purpose,
    ) -> Option<Arc<K>> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.entries.iter_mut().find(|e| {
            e.storage == storage && e.purpose == purpose && e.weight.layout() == weight.layout()
        })?;
        entry.last_use = clock;
        Arc::clone(&entry.kernel).downcast::<K>().ok()
    }

    /// Drops entries until `room` more bytes fit: first those whose weight only the cache
    /// holds, then the least recently used.
    fn make_room(&mut self, room: usize) {
        self.entries.retain(|e| !e.weight.is_unique());
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.last_use));
        let mut bytes = 0;
        self.entries.retain(|e| {
            bytes += (e.bytes)();
            bytes + room <= self.limit
        });
    }
}

/// Sets the bytes of prepared kernels kept between calls ([`DEFAULT_KERNEL_CACHE_LIMIT`]
/// unless set), dropping the least recently used ones above it; 0 turns the cache off.
pub fn set_kernel_cache_limit(bytes: usize) {
    let mut cache = cache();
    cache.limit = bytes;
    cache.make_room(0);
}

/// Drops every prepared kernel, and with it the cache's references to the weights.
pub fn clear_kernel_cache() {
    cache().entries.clear();
}

/// Bytes of the prepared kernels held now, their bfloat16 pairs included.
pub fn kernel_cache_bytes() -> usize {
    cache().bytes()
}

fn storage(weight: &FlexTensor) -> usize {
    Arc::as_ptr(&weight.data_arc()) as usize
}

/// The kernel of `weight` for `purpose`: from the cache, or made by `prepare(true)` and kept
/// (not kept when it alone exceeds the limit); made by `prepare(false)` when the cache is off.
/// The flag tells `prepare` whether the kernel is meant to serve many calls; `bytes` counts a
/// kernel's bytes whenever the cache needs them (a kept kernel may grow).
pub(crate) fn prepared<K: Any + Send + Sync>(
    weight: &FlexTensor,
    purpose: Purpose,
    bytes: fn(&K) -> usize,
    prepare: impl FnOnce(bool) -> K,
) -> Arc<K> {
    prepared_in(&CACHE, weight, purpose, bytes, prepare)
}

fn prepared_in<K: Any + Send + Sync>(
    cache: &Mutex<Cache>,
    weight: &FlexTensor,
    purpose: Purpose,
    bytes: fn(&K) -> usize,
    prepare: impl FnOnce(bool) -> K,
) -> Arc<K> {
    let storage = storage(weight);
    {
        let mut cache = lock(cache);
        if cache.limit == 0 {
            drop(cache);
            return Arc::new(prepare(false));
        }
        if let Some(kernel) = cache.find(weight, storage, purpose) {
            return kernel;
        }
    }
    // Prepared outside the lock, so that other layers' lookups do not wait for it.
    let kernel = Arc::new(prepare(true));
    let size = bytes(&kernel);
    let mut cache = lock(cache);
    // Another thread may have prepared the same kernel meanwhile.
    if let Some(kernel) = cache.find(weight, storage, purpose) {
        return kernel;
    }
    cache.make_room(size);
    if size <= cache.limit {
        let last_use = cache.clock;
        let counted = Arc::clone(&kernel);
        cache.entries.push(Entry {
            weight: weight.clone(),
            storage,
            purpose,
            kernel: Arc::clone(&kernel) as Arc<dyn Any + Send + Sync>,
            bytes: Box::new(move || bytes(&counted)),
            last_use,
        });
    }
    kernel
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn weight(len: usize) -> FlexTensor {
        crate::simd::tensor(vec![1.0; len], [len])
    }

    fn purpose(out_channels: usize) -> Purpose {
        Purpose::Conv(ConvGeometry {
            input: [1, 1, 4, 4],
            out_channels,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1; 4],
        })
    }

    /// Prepares a kernel of `floats` values through `cache`, counting preparations.
    fn get(
        cache: &Mutex<Cache>,
        w: &FlexTensor,
        p: Purpose,
        floats: usize,
        count: &Cell<usize>,
    ) -> Arc<Vec<f32>> {
        prepared_in(
            cache,
            w,
            p,
            |k: &Vec<f32>| 4 * k.len(),
            |reused| {
                assert!(reused, "a kept kernel is prepared for reuse");
                count.set(count.get() + 1);
                vec![0.0; floats]
            },
        )
    }

    #[test]
    fn a_kernel_is_prepared_once_per_storage_layout_and_purpose() {
        let cache = Mutex::new(Cache::new(1 << 20));
        let count = Cell::new(0);
        let w = weight(12);
        let a = get(&cache, &w, purpose(1), 10, &count);
        let b = get(&cache, &w.clone(), purpose(1), 10, &count);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(count.get(), 1);
        get(&cache, &w, purpose(2), 10, &count);
        assert_eq!(count.get(), 2);
        // The same storage seen as another shape.
        let view = w.reshape([3, 4].into());
        get(&cache, &view, purpose(1), 10, &count);
        assert_eq!(count.get(), 3);
        // Equal values in other storage.
        let other = weight(12);
        get(&cache, &other, purpose(1), 10, &count);
        assert_eq!(count.get(), 4);
        assert_eq!(lock(&cache).bytes(), 4 * 40);
    }

    #[test]
    fn dropped_weights_then_the_least_recently_used_make_room() {
        let cache = Mutex::new(Cache::new(100));
        let count = Cell::new(0);
        let (a, b, c) = (weight(4), weight(4), weight(4));
        get(&cache, &a, purpose(1), 10, &count);
        get(&cache, &b, purpose(1), 10, &count);
        get(&cache, &a, purpose(1), 10, &count);
        // 40 + 40 + 40 > 100: b, used least recently, goes.
        get(&cache, &c, purpose(1), 10, &count);
        assert_eq!(count.get(), 3);
        get(&cache, &a, purpose(1), 10, &count);
        get(&cache, &c, purpose(1), 10, &count);
        assert_eq!(count.get(), 3);
        // `b` is back and `a`, now the least recently used, went.
        get(&cache, &b, purpose(1), 10, &count);
        get(&cache, &a, purpose(1), 10, &count);
        assert_eq!(count.get(), 5);
        // Entries: `a`, `b`. Once only the cache holds `a`, it goes first, although used more
        // recently than `b`.
        drop(a);
        let d = weight(4);
        get(&cache, &d, purpose(1), 10, &count);
        get(&cache, &b, purpose(1), 10, &count);
        assert_eq!(count.get(), 6);
        let cache = lock(&cache);
        assert_eq!(cache.bytes(), 80);
        assert!(cache.entries.iter().all(|e| !e.weight.is_unique()));
    }

    /// A kept kernel that grows (as one does when its bfloat16 pairs are made) is counted at
    /// its new size, and makes room for others by it.
    #[test]
    fn a_kernel_that_grows_is_counted_at_its_size() {
        use std::sync::OnceLock;
        let cache = Mutex::new(Cache::new(100));
        let bytes = |k: &OnceLock<Vec<u8>>| k.get().map_or(1, Vec::len);
        let (a, b) = (weight(4), weight(4));
        let grows = prepared_in(&cache, &a, purpose(1), bytes, |_| OnceLock::new());
        assert_eq!(lock(&cache).bytes(), 1);
        grows.get_or_init(|| vec![0; 70]);
        assert_eq!(lock(&cache).bytes(), 70);
        // 70 + 40 > 100: `a`'s kernel, used least recently, goes.
        prepared_in(&cache, &b, purpose(1), bytes, |_| {
            OnceLock::from(vec![0; 40])
        });
        assert_eq!(lock(&cache).bytes(), 40);
    }

    #[test]
    fn a_kernel_over_the_limit_or_a_cache_turned_off_keeps_nothing() {
        let cache = Mutex::new(Cache::new(100));
        let count = Cell::new(0);
        let w = weight(4);
        get(&cache, &w, purpose(1), 30, &count);
        get(&cache, &w, purpose(1), 30, &count);
        assert_eq!((count.get(), lock(&cache).bytes()), (2, 0));
        lock(&cache).limit = 0;
        let kept = prepared_in(
            &cache,
            &w,
            purpose(1),
            |k: &Vec<f32>| k.len(),
            |reused| {
                assert!(
                    !reused,
                    "a kernel the cache will not keep is prepared for one call"
                );
                vec![0.0; 1]
            },
        );
        assert_eq!((kept.len(), lock(&cache).entries.len()), (1, 0));
    }
}
