//! Writes PyTorch checkpoints (a state dict of `f32` and `i64` tensors) without PyTorch, in either of the
//! two containers `torch.save` has used, so tests can make weight files of any size at run
//! time:
//!
//! * **zip** (PyTorch ≥ 1.6): `archive/data.pkl`, one stored entry per storage under
//!   `archive/data/`, `archive/version` and `archive/byteorder`;
//! * **legacy** (files saved before PyTorch 1.6): the magic-number, protocol-version and
//!   sys-info pickles, the state-dict pickle, the pickled list of storage keys, then each
//!   storage as an `i64` element count and its bytes.
//!
//! The state dict is pickled (protocol 2) as `torch.save` writes it: an `OrderedDict` whose
//! values are `torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False,
//! OrderedDict())`, each storage a persistent id `('storage', torch.FloatStorage, key, 'cpu',
//! numel)` (plus a `None` view in the legacy container); `int64` tensors use
//! `torch.LongStorage`.

use std::io::Write;
use std::path::Path;

/// One tensor of the state dict (contiguous, row-major).
pub struct Entry {
    pub key: String,
    pub shape: Vec<usize>,
    pub data: Data,
}

/// Tensor elements: `float32` or `int64` (as batch norm's `num_batches_tracked`).
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::I64(v) => v.len(),
        }
    }

    fn storage_type(&self) -> &'static str {
        match self {
            Self::F32(_) => "FloatStorage",
            Self::I64(_) => "LongStorage",
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Zip,
    Legacy,
}

/// Writes `entries` as a state dict to `path`.
pub fn write_pth(path: &Path, entries: &[Entry], container: Container) -> std::io::Result<()> {
    for e in entries {
        assert_eq!(e.data.len(), e.shape.iter().product::<usize>(), "{}", e.key);
    }
    let file = std::fs::File::create(path)?;
    let mut out = std::io::BufWriter::new(file);
    match container {
        Container::Zip => write_zip(&mut out, entries)?,
        Container::Legacy => write_legacy(&mut out, entries)?,
    }
    out.flush()
}

/// A protocol-2 pickle under construction.
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Self {
        Self(vec![0x80, 2])
    }

    fn op(&mut self, op: u8) -> &mut Self {
        self.0.push(op);
        self
    }

    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.0.push(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    fn int(&mut self, v: usize) -> &mut Self {
        self.0.push(b'J');
        self.0
            .extend_from_slice(&i32::try_from(v).unwrap().to_le_bytes());
        self
    }

    fn tuple(&mut self, items: &[usize]) -> &mut Self {
        self.op(b'(');
        for &v in items {
            self.int(v);
        }
        self.op(b't')
    }

    fn empty_ordered_dict(&mut self) -> &mut Self {
        self.global("collections", "OrderedDict").op(b')').op(b'R')
    }

    fn finish(&mut self) -> Vec<u8> {
        self.op(b'.');
        std::mem::take(&mut self.0)
    }
}

/// The state-dict pickle; storage `i` holds entry `i`.
fn state_dict_pickle(entries: &[Entry], legacy: bool) -> Vec<u8> {
    let mut p = Pickle::new();
    p.empty_ordered_dict().op(b'(');
    for (i, e) in entries.iter().enumerate() {
        let mut stride = vec![1; e.shape.len()];
        for d in (0..e.shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * e.shape[d + 1];
        }
        p.str(&e.key);
        p.global("torch._utils", "_rebuild_tensor_v2").op(b'(');
        // The persistent id of the storage.
        p.op(b'(')
            .str("storage")
            .global("torch", e.data.storage_type())
            .str(&i.to_string())
            .str("cpu")
            .int(e.data.len());
        if legacy {
            p.op(b'N');
        }
        p.op(b't').op(b'Q');
        p.int(0).tuple(&e.shape).tuple(&stride).op(0x89);
        p.empty_ordered_dict().op(b't').op(b'R');
    }
    p.op(b'u').finish()
}

fn write_legacy(out: &mut impl Write, entries: &[Entry]) -> std::io::Result<()> {
    // The magic number 0x1950a86a20f9469cfc6c as a LONG1, then protocol version 1001.
    let mut magic = Pickle::new();
    magic.op(0x8a).op(10);
    magic
        .0
        .extend_from_slice(&[0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
    out.write_all(&magic.finish())?;
    let mut version = Pickle::new();
    version.op(b'M').0.extend_from_slice(&1001u16.to_le_bytes());
    out.write_all(&version.finish())?;
    let mut sys_info = Pickle::new();
    sys_info.op(b'}').op(b'(');
    sys_info.str("protocol_version").int(1001);
    sys_info.str("little_endian").op(0x88);
    sys_info.str("type_sizes").op(b'}').op(b'(');
    sys_info
        .str("short")
        .int(2)
        .str("int")
        .int(4)
        .str("long")
        .int(4);
    sys_info.op(b'u').op(b'u');
    out.write_all(&sys_info.finish())?;
    out.write_all(&state_dict_pickle(entries, true))?;
    // torch.save sorts the storage keys as strings and writes the storages in that order.
    let mut keys: Vec<String> = (0..entries.len()).map(|i| i.to_string()).collect();
    keys.sort();
    let mut list = Pickle::new();
    list.op(b']').op(b'(');
    for k in &keys {
        list.str(k);
    }
    list.op(b'e');
    out.write_all(&list.finish())?;
    for k in &keys {
        let e = &entries[k.parse::<usize>().unwrap()];
        out.write_all(&(e.data.len() as i64).to_le_bytes())?;
        out.write_all(&e.data.bytes())?;
    }
    Ok(())
}

pub fn crc32(bytes: &[u8]) -> u32 {
    let table: Vec<u32> = (0..256u32)
        .map(|mut c| {
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            c
        })
        .collect();
    !bytes.iter().fold(!0u32, |crc, &b| {
        table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

fn write_zip(out: &mut impl Write, entries: &[Entry]) -> std::io::Result<()> {
    let mut files: Vec<(String, Vec<u8>)> =
        vec![("archive/data.pkl".into(), state_dict_pickle(entries, false))];
    files.extend(
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("archive/data/{i}"), e.data.bytes())),
    );
    files.push(("archive/version".into(), b"3\n".to_vec()));
    files.push(("archive/byteorder".into(), b"little".to_vec()));

    let mut offset = 0u32;
    let mut central = Vec::new();
    for (name, data) in &files {
        let crc = crc32(data);
        let size = u32::try_from(data.len()).expect("below 4 GiB");
        let mut header = Vec::new();
        header.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        header.extend_from_slice(&20u16.to_le_bytes()); // version needed
        header.extend_from_slice(&0u16.to_le_bytes()); // flags
        header.extend_from_slice(&0u16.to_le_bytes()); // stored
        header.extend_from_slice(&0u16.to_le_bytes()); // time
        header.extend_from_slice(&0x21u16.to_le_bytes()); // date 1980-01-01
        header.extend_from_slice(&crc.to_le_bytes());
        header.extend_from_slice(&size.to_le_bytes());
        header.extend_from_slice(&size.to_le_bytes());
        header.extend_from_slice(&(name.len() as u16).to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes()); // extra
        header.extend_from_slice(name.as_bytes());
        out.write_all(&header)?;
        out.write_all(data)?;

        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // made by
        central.extend_from_slice(&header[4..30]); // version needed .. extra length
        central.extend_from_slice(&0u16.to_le_bytes()); // comment
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
        offset += header.len() as u32 + size;
    }
    out.write_all(&central)?;
    let count = files.len() as u16;
    let mut end = Vec::new();
    end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    end.extend_from_slice(&0u16.to_le_bytes());
    end.extend_from_slice(&0u16.to_le_bytes());
    end.extend_from_slice(&count.to_le_bytes());
    end.extend_from_slice(&count.to_le_bytes());
    end.extend_from_slice(&(central.len() as u32).to_le_bytes());
    end.extend_from_slice(&offset.to_le_bytes());
    end.extend_from_slice(&0u16.to_le_bytes());
    out.write_all(&end)
}
