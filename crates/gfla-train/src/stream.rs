//! The training data as a stream of numbered steps, served to burn-train's learner one
//! checkpoint interval (its "epoch") at a time.
//!
//! Step `s` (1-based) reads the batch `(s - 1) % B` of data epoch `(s - 1) / B`, where `B` is the
//! number of batches in one pass over the pairs and every data epoch is its own seeded shuffle;
//! a pair's augmentation is drawn from its index and data epoch. A step's batch is therefore a
//! function of the seed and the step alone: a run resumed at step `s` reads what an
//! uninterrupted one reads there, and the loading threads cannot change the order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::Device;

use crate::dataset::{PairBatch, PairBatcher, PairDataset};
use crate::synth::{Rng, mix_seed};

/// Which pairs each step reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOrder {
    pairs: usize,
    batch_size: usize,
    seed: u64,
}

impl StepOrder {
    pub fn new(pairs: usize, batch_size: usize, seed: u64) -> Self {
        assert!(pairs > 0 && batch_size > 0, "no pairs or a zero batch size");
        Self {
            pairs,
            batch_size,
            seed,
        }
    }

    /// Batches in one pass over the pairs (the last one smaller when the batch size does not
    /// divide the number of pairs).
    pub fn batches_per_epoch(&self) -> usize {
        self.pairs.div_ceil(self.batch_size)
    }

    /// The shuffle of data epoch `epoch`.
    pub fn permutation(&self, epoch: usize) -> Vec<usize> {
        // "SHUF": keeps this stream apart from the augmentation's, which mixes the same seed.
        let mut rng = Rng::new(mix_seed(&[self.seed, 0x5348_5546, epoch as u64]));
        let mut order: Vec<usize> = (0..self.pairs).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        order
    }

    /// The data epoch of step `step` and where its batch starts and ends in that epoch's
    /// shuffle.
    fn place(&self, step: usize) -> (usize, std::ops::Range<usize>) {
        assert!(step > 0, "steps count from 1");
        let per_epoch = self.batches_per_epoch();
        let (epoch, batch) = ((step - 1) / per_epoch, (step - 1) % per_epoch);
        let start = batch * self.batch_size;
        (epoch, start..(start + self.batch_size).min(self.pairs))
    }

    /// The data epoch of step `step` and the pairs its batch holds, in order.
    pub fn step(&self, step: usize) -> (usize, Vec<usize>) {
        let (epoch, range) = self.place(step);
        (epoch, self.permutation(epoch)[range].to_vec())
    }

    /// How many pairs step `step` reads.
    pub fn step_len(&self, step: usize) -> usize {
        self.place(step).1.len()
    }
}

/// The last step of the checkpoint interval that step `step` falls in: the next multiple of
/// `every`, or `total` if that comes first.
pub fn interval_end(step: usize, every: usize, total: usize) -> usize {
    (step.div_ceil(every.max(1)) * every.max(1)).min(total)
}

/// How many checkpoint intervals take a run from step `done` to step `total`.
pub fn intervals(done: usize, every: usize, total: usize) -> usize {
    let (mut at, mut n) = (done, 0);
    while at < total {
        at = interval_end(at + 1, every, total);
        n += 1;
    }
    n
}

struct Stream {
    data: PairDataset,
    order: StepOrder,
    device: Device,
    workers: usize,
    /// A checkpoint every this many steps.
    every: usize,
    total: usize,
    /// The last step served.
    served: AtomicUsize,
}

/// The training stream as a burn [`DataLoader`]: each `iter()` serves the steps of the next
/// checkpoint interval, in order, loaded ahead by `workers` threads (each takes every
/// `workers`-th step, so the order never depends on which thread is faster).
#[derive(Clone)]
pub struct StepLoader {
    stream: Arc<Stream>,
}

impl StepLoader {
    /// A loader that has served the steps up to `done` and ends at step `total`, with a
    /// checkpoint interval of `every` steps.
    #[allow(clippy::too_many_arguments)] // one call site, and named fields would repeat them
    pub fn new(
        data: PairDataset,
        batch_size: usize,
        seed: u64,
        workers: usize,
        device: Device,
        every: usize,
        done: usize,
        total: usize,
    ) -> Self {
        let order = StepOrder::new(data.len(), batch_size, seed);
        Self {
            stream: Arc::new(Stream {
                data,
                order,
                device,
                workers: workers.max(1),
                every,
                total,
                served: AtomicUsize::new(done),
            }),
        }
    }

    /// The last step served so far.
    pub fn served(&self) -> usize {
        self.stream.served.load(Ordering::SeqCst)
    }
}

fn load(stream: &Stream, step: usize) -> Result<PairBatch, DatasetError> {
    let (epoch, pairs) = stream.order.step(step);
    let items = pairs
        .into_iter()
        .map(|i| stream.data.item_at(i, epoch))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PairBatcher.batch(items, &stream.device))
}

struct StepIter {
    stream: Arc<Stream>,
    first: usize,
    last: usize,
    next: usize,
    receivers: Vec<Receiver<Result<PairBatch, DatasetError>>>,
    items_done: usize,
    items_total: usize,
}

#[derive(Debug)]
struct WorkerGone(usize);

impl std::fmt::Display for WorkerGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the thread loading step {} stopped", self.0)
    }
}

impl std::error::Error for WorkerGone {}

impl Iterator for StepIter {
    type Item = Result<PairBatch, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next > self.last {
            return None;
        }
        let step = self.next;
        let worker = (step - self.first) % self.receivers.len();
        let batch = self.receivers[worker]
            .recv()
            .unwrap_or_else(|_| Err(DatasetError::new(WorkerGone(step))));
        self.next += 1;
        self.items_done += self.stream.order.step_len(step);
        self.stream.served.store(step, Ordering::SeqCst);
        Some(batch)
    }
}

impl DataLoaderIterator<PairBatch> for StepIter {
    fn progress(&self) -> Progress {
        Progress::new(self.items_done, self.items_total, Some("items".into()))
    }
}

impl DataLoader<PairBatch> for StepLoader {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<PairBatch> + 'a> {
        let stream = &self.stream;
        let first = stream.served.load(Ordering::SeqCst) + 1;
        let last = interval_end(first, stream.every, stream.total);
        let workers = stream.workers.min((last + 1).saturating_sub(first)).max(1);
        let receivers = (0..workers)
            .map(|w| {
                // Two batches ahead per thread.
                let (sender, receiver) = sync_channel(2);
                let stream = stream.clone();
                std::thread::Builder::new()
                    .name(format!("gfla-data-{w}"))
                    .spawn(move || {
                        for step in (first + w..=last).step_by(workers) {
                            // The iterator was dropped: nobody wants the rest.
                            if sender.send(load(&stream, step)).is_err() {
                                break;
                            }
                        }
                    })
                    .expect("cannot start a data-loading thread");
                receiver
            })
            .collect();
        Box::new(StepIter {
            stream: stream.clone(),
            first,
            last,
            next: first,
            receivers,
            items_done: 0,
            items_total: (first..=last).map(|s| stream.order.step_len(s)).sum(),
        })
    }

    /// The pairs of one checkpoint interval (what one `iter()` serves), at most.
    fn num_items(&self) -> usize {
        let stream = &self.stream;
        let first = stream.served.load(Ordering::SeqCst) + 1;
        let last = interval_end(first, stream.every, stream.total);
        (first..=last).map(|s| stream.order.step_len(s)).sum()
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<PairBatch>> {
        let s = &self.stream;
        Arc::new(StepLoader {
            stream: Arc::new(Stream {
                data: s.data.clone(),
                order: s.order,
                device: device.clone(),
                workers: s.workers,
                every: s.every,
                total: s.total,
                served: AtomicUsize::new(s.served.load(Ordering::SeqCst)),
            }),
        })
    }

    /// Not supported: the stream is one sequence of steps for one device (GFLA trains on one).
    fn slice(&self, _start: usize, _end: usize) -> Arc<dyn DataLoader<PairBatch>> {
        panic!("the GFLA step stream cannot be split across devices")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_epoch_reads_every_pair_once_in_its_own_order() {
        let order = StepOrder::new(10, 4, 7);
        assert_eq!(order.batches_per_epoch(), 3);
        let mut seen = vec![];
        for step in 1..=3 {
            let (epoch, pairs) = order.step(step);
            assert_eq!(epoch, 0);
            seen.extend(pairs);
        }
        assert_eq!(order.step_len(3), 2);
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(seen, order.permutation(0));
        assert_ne!(order.permutation(0), order.permutation(1));
        assert_eq!(order.step(4), (1, order.permutation(1)[..4].to_vec()));
        assert_ne!(
            StepOrder::new(10, 4, 8).permutation(0),
            order.permutation(0)
        );
    }

    #[test]
    fn intervals_end_at_multiples_of_the_checkpoint_interval_and_at_the_end() {
        assert_eq!(interval_end(1, 500, 1200), 500);
        assert_eq!(interval_end(500, 500, 1200), 500);
        assert_eq!(interval_end(1001, 500, 1200), 1200);
        // A finished run of 1200 steps extended to 2000.
        assert_eq!(interval_end(1201, 500, 2000), 1500);
        assert_eq!(intervals(0, 500, 1200), 3);
        assert_eq!(intervals(1200, 500, 2000), 2);
        assert_eq!(intervals(6, 3, 6), 0);
    }
}
