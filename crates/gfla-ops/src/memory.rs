//! The C library's allocator, tuned for networks that allocate and free the same large tensors
//! on every pass.

/// Makes glibc's `malloc` keep the memory a program frees for its next allocations, instead of
/// handing large blocks (over 32 MiB) and the free top of its heap back to the kernel. Each
/// block handed back returned as fresh pages, which the kernel maps and zeroes on first touch:
/// on the 2-core machine of the README's tables that was 15 % of a DeepFashion training step
/// (2.41-2.45 -> 2.03-2.08 s, batch 2) and 10 % of DeepFashion G's forward (0.216-0.222 ->
/// 0.196-0.198 s). The peak memory is unchanged (1.00 GB resident for the training step, 1.02
/// GB tuned), but the process keeps what it once held until it exits. A pool thread's blocks
/// that fill a heap of their own (glibc gives each thread's arena heaps of at most 64 MiB) are
/// still unmapped when freed: glibc has no setting for those.
///
/// The setting is the whole process's, so a program calls this once, at its start; a library
/// should leave it to its program. The binaries, examples and benchmarks of this workspace call
/// it. Returns whether the allocator took the setting: `false`, with nothing changed, where the
/// C library is not glibc.
pub fn reuse_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use libc::{M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, c_int, mallopt};
        // Releases that refuse more than half their largest heap take 32 MiB (2.36 takes 1
        // GiB). Setting the trim threshold alone
        // would also switch off the dynamic mmap threshold (everything over 128 KiB mapped
        // afresh: training took twice as long), so it follows a threshold that was taken.
        // SAFETY: `mallopt` only sets allocator parameters; it is thread-safe.
        let mapped = [1 << 30, 32 << 20]
            .into_iter()
            .any(|bytes: c_int| unsafe { mallopt(M_MMAP_THRESHOLD, bytes) } == 1);
        // SAFETY: as above.
        mapped && unsafe { mallopt(M_TRIM_THRESHOLD, c_int::MAX) } == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Page faults this thread has taken.
    fn faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `getrusage` fills the struct it is given.
        let usage = unsafe {
            assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()), 0);
            usage.assume_init()
        };
        usage.ru_minflt
    }

    /// Set in the child process of the test below.
    const CHILD: &str = "GFLA_MEMORY_TEST_CHILD";

    /// A 48 MiB block, freed and allocated again, comes back without page faults: by default
    /// glibc maps blocks over 32 MiB afresh each time (12,288 faults of 4 KiB pages). Measured
    /// in a child process that runs this test alone: there the test thread's arena holds
    /// nothing else, so the block stays in the arena's first heap, as in a program. (In a test
    /// process, an arena that earlier tests left half full puts it in a heap of its own, which
    /// glibc unmaps when it is free again, whatever the setting.)
    #[test]
    fn a_freed_block_comes_back_without_page_faults() {
        if std::env::var_os(CHILD).is_none() {
            let name = "memory::tests::a_freed_block_comes_back_without_page_faults";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--test-threads=1", "--nocapture"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "the child failed:\n{log}");
            assert!(log.contains("1 passed"), "the child ran no test:\n{log}");
            return;
        }
        assert!(reuse_freed_memory());
        let len = 48 << 20;
        let touch = || {
            let mut v = vec![0u8; len];
            for i in (0..len).step_by(4096) {
                v[i] = 1;
            }
            std::hint::black_box(&v);
        };
        touch();
        let before = faults();
        touch();
        let taken = faults() - before;
        assert!(taken < 1000, "{taken} page faults");
    }
}
