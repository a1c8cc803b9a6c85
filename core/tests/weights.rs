//! Checkpoint readers: `.pth` zip archives (restricted unpickler) and `.safetensors` files.
//!
//! `.pth` files are built here with hand-assembled pickles that follow what `torch.save`
//! (protocol 2) emits byte for byte in structure; `tests/golden/weights/basicsr_tiny.pth` is a
//! real `torch.save` output (regenerate with `scripts/make_weights_fixtures.py`).

use std::collections::HashMap;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use maskdcpt_core::Error;
use maskdcpt_core::weights::{DType, Format, LoadOptions, WeightStore};
use proptest::prelude::*;
use zip::write::SimpleFileOptions;

// ---- building torch.save-style pickles --------------------------------------------------------

/// A value to pickle the way `torch.save` does.
enum Node {
    /// A plain `dict`.
    Dict(Vec<(String, Node)>),
    /// A `collections.OrderedDict` (what `state_dict()` returns).
    Ordered(Vec<(String, Node)>),
    /// A tensor, through `torch._utils._rebuild_tensor_v2`.
    Tensor(View),
    /// An `nn.Parameter`, through `torch._utils._rebuild_parameter`.
    Param(View),
    /// An int.
    Int(i64),
}

/// A tensor's storage and strided view, as `torch.save` records it.
#[derive(Clone)]
struct View {
    class: &'static str,
    key: &'static str,
    numel: usize,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// A contiguous tensor over a whole storage.
fn view(class: &'static str, key: &'static str, size: &[usize]) -> View {
    let mut stride = vec![1; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * size[i + 1];
    }
    View { class, key, numel: size.iter().product(), offset: 0, size: size.to_vec(), stride }
}

/// A contiguous f32 tensor.
fn f32_tensor(key: &'static str, size: &[usize]) -> Node {
    Node::Tensor(view("FloatStorage", key, size))
}

/// Protocol-2 pickle writer that memoises like CPython: every string, tuple and global is
/// BINPUT, and the shared constants (`'storage'`, `'cpu'`, globals) are re-read with BINGET.
#[derive(Default)]
struct Pickler {
    out: Vec<u8>,
    next: u8,
    shared: HashMap<String, u8>,
}

impl Pickler {
    fn pickle(root: &Node) -> Vec<u8> {
        let mut p = Pickler::default();
        p.out.extend_from_slice(b"\x80\x02");
        p.node(root);
        p.out.push(b'.');
        p.out
    }

    fn put(&mut self) {
        self.out.extend_from_slice(&[b'q', self.next]);
        self.next += 1;
    }

    fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        self.put();
    }

    /// Writes `emit`'s bytes once and memoises them under `id`; later calls re-read the memo.
    fn shared(&mut self, id: &str, emit: impl FnOnce(&mut Self)) {
        if let Some(&index) = self.shared.get(id) {
            self.out.extend_from_slice(&[b'h', index]);
        } else {
            let index = self.next;
            emit(self);
            self.shared.insert(id.to_owned(), index);
        }
    }

    fn global(&mut self, module: &str, name: &str) {
        self.shared(&format!("{module}\n{name}"), |p| {
            p.out.extend_from_slice(format!("c{module}\n{name}\n").as_bytes());
            p.put();
        });
    }

    fn int(&mut self, v: i64) {
        match v {
            0..=255 => self.out.extend_from_slice(&[b'K', v as u8]),
            256..=65535 => {
                self.out.push(b'M');
                self.out.extend_from_slice(&(v as u16).to_le_bytes());
            }
            _ => {
                self.out.push(b'J');
                self.out.extend_from_slice(&i32::try_from(v).unwrap().to_le_bytes());
            }
        }
    }

    fn tuple(&mut self, items: &[usize]) {
        match items.len() {
            0 => self.out.push(b')'),
            1..=3 => {
                items.iter().for_each(|&i| self.int(i as i64));
                self.out.push([0x85, 0x86, 0x87][items.len() - 1]);
            }
            _ => {
                self.out.push(b'(');
                items.iter().for_each(|&i| self.int(i as i64));
                self.out.push(b't');
            }
        }
        self.put();
    }

    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.extend_from_slice(b")R");
        self.put();
    }

    fn items(&mut self, items: &[(String, Node)]) {
        if items.is_empty() {
            return;
        }
        self.out.push(b'(');
        for (k, v) in items {
            self.str(k);
            self.node(v);
        }
        self.out.push(b'u');
    }

    fn tensor(&mut self, v: &View) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.out.extend_from_slice(b"((");
        self.shared("storage", |p| p.str("storage"));
        self.global("torch", v.class);
        self.str(v.key);
        self.shared("cpu", |p| p.str("cpu"));
        self.int(v.numel as i64);
        self.out.push(b't');
        self.put();
        self.out.push(b'Q');
        self.int(v.offset as i64);
        self.tuple(&v.size);
        self.tuple(&v.stride);
        self.out.push(0x89);
        self.empty_ordered_dict();
        self.out.push(b't');
        self.put();
        self.out.push(b'R');
        self.put();
    }

    fn node(&mut self, node: &Node) {
        match node {
            Node::Dict(items) => {
                self.out.push(b'}');
                self.put();
                self.items(items);
            }
            Node::Ordered(items) => {
                self.empty_ordered_dict();
                self.items(items);
            }
            Node::Tensor(v) => self.tensor(v),
            Node::Param(v) => {
                self.global("torch._utils", "_rebuild_parameter");
                self.tensor(v);
                self.out.push(0x88);
                self.empty_ordered_dict();
                self.out.push(0x87);
                self.put();
                self.out.push(b'R');
                self.put();
            }
            Node::Int(i) => self.int(*i),
        }
    }
}

/// A zip of stored (uncompressed) entries, as torch writes them.
fn zip_of(files: &[(String, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in files {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A `torch.save`-style zip: `<folder>/data.pkl`, `byteorder`, `data/<key>` blobs, `version`.
fn zip_archive(folder: &str, pkl: &[u8], byteorder: &str, blobs: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut files = vec![(format!("{folder}/data.pkl"), pkl), (format!("{folder}/byteorder"), byteorder.as_bytes())];
    files.extend(blobs.iter().map(|(key, bytes)| (format!("{folder}/data/{key}"), bytes.as_slice())));
    files.push((format!("{folder}/version"), b"3\n"));
    zip_of(&files)
}

/// A `.pth` of `root` with the given storage blobs.
fn pth(root: &Node, blobs: &[(&str, Vec<u8>)]) -> Vec<u8> {
    zip_archive("archive", &Pickler::pickle(root), "little", blobs)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `n` f32 values `start, start+1, ...`.
fn ramp(start: f32, n: usize) -> Vec<u8> {
    f32_bytes(&(0..n).map(|i| start + i as f32).collect::<Vec<_>>())
}

fn entries(items: Vec<(&str, Node)>) -> Vec<(String, Node)> {
    items.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A BasicSR dict: `params` always, `params_ema` optionally (values offset by 100).
fn basicsr(with_ema: bool) -> Vec<u8> {
    let params =
        Node::Ordered(entries(vec![("conv.weight", f32_tensor("0", &[2, 3])), ("conv.bias", f32_tensor("1", &[2]))]));
    let mut top = vec![("params", params)];
    let mut blobs = vec![("0", ramp(0.0, 6)), ("1", ramp(10.0, 2))];
    if with_ema {
        let ema = Node::Ordered(entries(vec![
            ("conv.weight", f32_tensor("2", &[2, 3])),
            ("conv.bias", f32_tensor("3", &[2])),
        ]));
        top.push(("params_ema", ema));
        blobs.extend([("2", ramp(100.0, 6)), ("3", ramp(110.0, 2))]);
    }
    pth(&Node::Dict(entries(top)), &blobs)
}

fn load(bytes: &[u8]) -> Result<WeightStore, Error> {
    WeightStore::from_bytes(bytes, &LoadOptions::default())
}

fn load_key(bytes: &[u8], key: &str) -> Result<WeightStore, Error> {
    WeightStore::from_bytes(bytes, &LoadOptions { param_key: Some(key.to_owned()) })
}

fn values(store: &WeightStore, key: &str) -> Vec<f32> {
    store.get(key).unwrap_or_else(|| panic!("no key {key}")).to_f32()
}

fn shape<'a>(store: &'a WeightStore, key: &str) -> &'a [usize] {
    store.get(key).unwrap_or_else(|| panic!("no key {key}")).shape()
}

fn keys(store: &WeightStore) -> Vec<&str> {
    store.iter().map(|(k, _)| k).collect()
}

/// A file under the system temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> Self {
        let dir = std::env::temp_dir().join(format!("maskdcpt-weights-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir); // fails harmlessly while another test's file is there
        }
    }
}

// ---- the real torch.save fixture --------------------------------------------------------------

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/weights/basicsr_tiny.pth")
}

/// `params` of the fixture, as written by `scripts/make_weights_fixtures.py`, flattened row-major.
fn expected_params() -> Vec<(&'static str, DType, Vec<usize>, Vec<f32>)> {
    vec![
        ("bias", DType::F32, vec![2], vec![0.25, -0.75]),
        ("brain", DType::BF16, vec![3], vec![1.0, -0.5, 3.0]),
        ("double", DType::F64, vec![1, 2], vec![0.125, 2.5]),
        ("half", DType::F16, vec![3], vec![1.5, -2.25, 1000.0]),
        ("strided", DType::F32, vec![2, 2], vec![4.0, 6.0, 8.0, 10.0]),
        ("transposed", DType::F32, vec![3, 2], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]),
        ("weight", DType::F32, vec![2, 3, 1, 1], vec![-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]),
    ]
}

fn check_golden(store: &WeightStore, scale: f32) {
    let expected = expected_params();
    assert_eq!(keys(store), expected.iter().map(|e| e.0).collect::<Vec<_>>());
    for (key, dtype, shape, values) in expected {
        let tensor = store.get(key).unwrap();
        assert_eq!(tensor.dtype(), dtype, "{key}");
        assert_eq!(tensor.shape(), shape, "{key}");
        assert_eq!(tensor.to_f32(), values.iter().map(|v| v * scale).collect::<Vec<_>>(), "{key}");
    }
    assert_eq!(store.format(), Format::TorchZip);
}

#[test]
fn golden_fixture_defaults_to_params_ema_with_module_prefix_stripped() {
    let store = WeightStore::load(&golden(), &LoadOptions::default()).unwrap();
    assert_eq!(store.param_key(), Some("params_ema"));
    check_golden(&store, 2.0);
}

/// `archive` with every entry recompressed with deflate (as some tools re-save checkpoints).
fn deflated(archive: &[u8]) -> Vec<u8> {
    let mut input = zip::ZipArchive::new(Cursor::new(archive)).unwrap();
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for i in 0..input.len() {
        let mut entry = input.by_index(i).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        out.start_file(entry.name().unwrap().into_owned(), options).unwrap();
        out.write_all(&bytes).unwrap();
    }
    out.finish().unwrap().into_inner()
}

#[test]
fn deflated_archives_read_the_same_and_check_their_crc() {
    let strided = View { class: "FloatStorage", key: "0", numel: 12, offset: 1, size: vec![2, 3], stride: vec![1, 4] };
    let tail = View { class: "FloatStorage", key: "0", numel: 12, offset: 8, size: vec![4], stride: vec![1] };
    let root = Node::Ordered(entries(vec![
        ("v", Node::Tensor(strided)),
        ("t", Node::Tensor(tail)),
        ("w", f32_tensor("1", &[3])),
    ]));
    let stored = pth(&root, &[("0", ramp(0.0, 12)), ("1", ramp(20.0, 3))]);
    let (a, b) = (load(&stored).unwrap(), load(&deflated(&stored)).unwrap());
    assert_eq!(keys(&a), keys(&b));
    for key in keys(&a) {
        assert_eq!((shape(&a, key), values(&a, key)), (shape(&b, key), values(&b, key)), "{key}");
    }
    assert_eq!(values(&a, "t"), [8.0, 9.0, 10.0, 11.0]);
    // A flipped bit inside the compressed blob fails the zip reader's own checks.
    let mut damaged = deflated(&stored);
    let at = damaged.windows(14).position(|w| w == b"archive/data/1").unwrap();
    let data = at + 14 + 2; // past the local header's name, into the deflate stream
    damaged[data] ^= 0x01;
    assert!(load(&damaged).is_err());
}

#[test]
fn golden_fixture_explicit_params() {
    let store = WeightStore::load(&golden(), &LoadOptions { param_key: Some("params".into()) }).unwrap();
    assert_eq!(store.param_key(), Some("params"));
    check_golden(&store, 1.0);
}

// ---- choosing the state dict ------------------------------------------------------------------

#[test]
fn params_ema_is_the_default() {
    let store = load(&basicsr(true)).unwrap();
    assert_eq!(store.param_key(), Some("params_ema"));
    assert_eq!(values(&store, "conv.bias"), [110.0, 111.0]);
    assert_eq!(shape(&store, "conv.weight"), [2, 3]);
}

#[test]
fn falls_back_to_params_without_params_ema() {
    let store = load(&basicsr(false)).unwrap();
    assert_eq!(store.param_key(), Some("params"));
    assert_eq!(values(&store, "conv.weight"), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
}

#[test]
fn explicit_param_key_selects_that_entry() {
    let store = load_key(&basicsr(true), "params").unwrap();
    assert_eq!(store.param_key(), Some("params"));
    assert_eq!(values(&store, "conv.bias"), [10.0, 11.0]);
}

#[test]
fn missing_param_key_lists_the_top_level_keys() {
    let err = load_key(&basicsr(true), "params_x").unwrap_err();
    let Error::NoStateDict(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains("`params_x`") && msg.contains("`params`") && msg.contains("`params_ema`"), "{msg}");
}

#[test]
fn param_key_on_a_bare_state_dict_says_so() {
    let root = Node::Ordered(entries(vec![("w", f32_tensor("0", &[1]))]));
    let err = load_key(&pth(&root, &[("0", ramp(0.0, 1))]), "params").unwrap_err();
    assert!(matches!(&err, Error::NoStateDict(msg) if msg.contains("bare state dict of 1 tensors")), "{err:?}");
}

#[test]
fn bare_state_dict_with_module_prefix_is_stripped() {
    let root = Node::Ordered(entries(vec![("module.a", f32_tensor("0", &[2])), ("module.b", f32_tensor("1", &[1]))]));
    let store = load(&pth(&root, &[("0", ramp(1.0, 2)), ("1", ramp(5.0, 1))])).unwrap();
    assert_eq!(store.param_key(), None);
    assert_eq!(keys(&store), ["a", "b"]);
    assert_eq!(values(&store, "a"), [1.0, 2.0]);
}

#[test]
fn state_dict_wrapper_is_unwrapped() {
    let inner = Node::Ordered(entries(vec![("w", f32_tensor("0", &[2]))]));
    let root = Node::Dict(entries(vec![("epoch", Node::Int(7)), ("state_dict", inner)]));
    let store = load(&pth(&root, &[("0", ramp(3.0, 2))])).unwrap();
    assert_eq!(store.param_key(), Some("state_dict"));
    assert_eq!(values(&store, "w"), [3.0, 4.0]);
}

#[test]
fn non_tensor_entry_in_the_state_dict_is_an_error_naming_it() {
    let params = Node::Ordered(entries(vec![("w", f32_tensor("0", &[2])), ("steps", Node::Int(1000))]));
    let root = Node::Dict(entries(vec![("params", params)]));
    let err = load(&pth(&root, &[("0", ramp(0.0, 2))])).unwrap_err();
    let Error::NoStateDict(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains("`steps`") && msg.contains("1000"), "{msg}");
}

#[test]
fn integer_tensor_is_an_unsupported_dtype() {
    let root = Node::Ordered(entries(vec![("index", Node::Tensor(view("LongStorage", "0", &[2])))]));
    let err = load(&pth(&root, &[("0", vec![0; 16])])).unwrap_err();
    assert!(matches!(&err, Error::UnsupportedDtype { key, dtype } if key == "index" && dtype == "i64"), "{err:?}");
}

// ---- dtypes, parameters, strides --------------------------------------------------------------

#[test]
fn f16_bf16_f64_tensors_convert_to_f32() {
    let root = Node::Ordered(entries(vec![
        ("h", Node::Tensor(view("HalfStorage", "0", &[2]))),
        ("b", Node::Tensor(view("BFloat16Storage", "1", &[2]))),
        ("d", Node::Tensor(view("DoubleStorage", "2", &[2]))),
    ]));
    let f16: Vec<u8> = [0.5f32, -3.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let bf16: Vec<u8> = [2.0f32, -0.25].iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    let f64: Vec<u8> = [1.0e-3f64, 7.5].iter().flat_map(|v| v.to_le_bytes()).collect();
    let store = load(&pth(&root, &[("0", f16), ("1", bf16), ("2", f64)])).unwrap();
    assert_eq!(store.get("h").unwrap().dtype(), DType::F16);
    assert_eq!(values(&store, "h"), [0.5, -3.0]);
    assert_eq!(store.get("b").unwrap().dtype(), DType::BF16);
    assert_eq!(values(&store, "b"), [2.0, -0.25]);
    assert_eq!(store.get("d").unwrap().dtype(), DType::F64);
    assert_eq!(values(&store, "d"), [1.0e-3, 7.5]);
    assert_eq!(store.common_dtype(), None);
}

#[test]
fn parameter_is_read_as_its_tensor() {
    let root = Node::Dict(entries(vec![("p", Node::Param(view("FloatStorage", "0", &[3])))]));
    let store = load(&pth(&root, &[("0", ramp(1.0, 3))])).unwrap();
    assert_eq!(values(&store, "p"), [1.0, 2.0, 3.0]);
}

#[test]
fn non_contiguous_view_is_gathered() {
    // storage 0..12; element (i, j) of the view is storage[1 + i + 4j].
    let strided = View { class: "FloatStorage", key: "0", numel: 12, offset: 1, size: vec![2, 3], stride: vec![1, 4] };
    let whole = view("FloatStorage", "0", &[12]);
    let root = Node::Ordered(entries(vec![("v", Node::Tensor(strided)), ("w", Node::Tensor(whole))]));
    let store = load(&pth(&root, &[("0", ramp(0.0, 12))])).unwrap();
    assert_eq!(shape(&store, "v"), [2, 3]);
    assert_eq!(values(&store, "v"), [1.0, 5.0, 9.0, 2.0, 6.0, 10.0]);
    assert_eq!(values(&store, "w"), (0..12).map(|i| i as f32).collect::<Vec<_>>());
}

#[test]
fn zero_stride_and_empty_views_are_read() {
    let broadcast = View { class: "FloatStorage", key: "0", numel: 1, offset: 0, size: vec![2, 2], stride: vec![0, 0] };
    let empty = View { class: "FloatStorage", key: "1", numel: 0, offset: 0, size: vec![0, 4], stride: vec![4, 1] };
    let root = Node::Ordered(entries(vec![("b", Node::Tensor(broadcast)), ("e", Node::Tensor(empty))]));
    let store = load(&pth(&root, &[("0", ramp(9.0, 1)), ("1", Vec::new())])).unwrap();
    assert_eq!(values(&store, "b"), [9.0; 4]);
    assert_eq!(shape(&store, "e"), [0, 4]);
    assert!(values(&store, "e").is_empty());
}

fn assert_corrupt(result: Result<WeightStore, Error>, needle: &str) {
    match result {
        Err(Error::CorruptWeights { detail, .. }) => assert!(detail.contains(needle), "{detail}"),
        other => panic!("expected a corrupt-weights error containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn storage_offset_out_of_range_is_an_error() {
    let v = View { class: "FloatStorage", key: "0", numel: 12, offset: 10, size: vec![4], stride: vec![1] };
    let root = Node::Ordered(entries(vec![("v", Node::Tensor(v))]));
    assert_corrupt(load(&pth(&root, &[("0", ramp(0.0, 12))])), "outside its storage");
}

#[test]
fn stride_out_of_range_is_an_error() {
    let v = View { class: "FloatStorage", key: "0", numel: 12, offset: 0, size: vec![2, 3], stride: vec![1, 6] };
    let root = Node::Ordered(entries(vec![("v", Node::Tensor(v))]));
    assert_corrupt(load(&pth(&root, &[("0", ramp(0.0, 12))])), "outside its storage");
}

#[test]
fn storage_blob_of_the_wrong_size_is_an_error() {
    let root = Node::Ordered(entries(vec![("v", f32_tensor("0", &[8]))]));
    assert_corrupt(load(&pth(&root, &[("0", ramp(0.0, 6))])), "storage");
}

#[test]
fn missing_storage_blob_is_an_error() {
    let root = Node::Ordered(entries(vec![("v", f32_tensor("7", &[2]))]));
    assert_corrupt(load(&pth(&root, &[("0", ramp(0.0, 2))])), "archive/data/7");
}

#[test]
fn flipped_storage_byte_fails_the_crc() {
    let root = Node::Ordered(entries(vec![("v", f32_tensor("0", &[4]))]));
    let blob = f32_bytes(&[1.25, 2.5, 3.75, 5.0]);
    let mut bytes = pth(&root, &[("0", blob.clone())]);
    let at = bytes.windows(blob.len()).position(|w| w == blob).unwrap();
    bytes[at + 5] ^= 0x40;
    assert_corrupt(load(&bytes), "archive/data/0");
}

// ---- hostile and broken archives --------------------------------------------------------------

/// A `.pth` whose `data.pkl` is `pkl`.
fn pth_with_pickle(pkl: &[u8]) -> Vec<u8> {
    zip_archive("archive", pkl, "little", &[])
}

fn assert_forbidden(pkl: &[u8], module: &str, name: &str) {
    match load(&pth_with_pickle(pkl)) {
        Err(Error::ForbiddenGlobal { module: m, name: n }) => assert_eq!((m.as_str(), n.as_str()), (module, name)),
        other => panic!("expected ForbiddenGlobal {module}.{name}, got {other:?}"),
    }
}

#[test]
fn os_system_global_is_refused() {
    assert_forbidden(b"\x80\x02cos\nsystem\nq\x00X\x05\x00\x00\x00echo!q\x01\x85q\x02Rq\x03.", "os", "system");
}

#[test]
fn builtins_eval_and_getattr_globals_are_refused() {
    assert_forbidden(b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.", "builtins", "eval");
    assert_forbidden(b"\x80\x02c__builtin__\ngetattr\n.", "__builtin__", "getattr");
    assert_forbidden(b"\x80\x02}X\x01\x00\x00\x00kcposix\nsystem\ns.", "posix", "system");
}

#[test]
fn stack_global_is_checked_too() {
    // protocol 4: FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL
    let pkl = b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94.";
    assert_forbidden(pkl, "os", "system");
    assert_forbidden(b"\x80\x04\x8c\x05torch\x8c\x04load\x93.", "torch", "load");
}

#[test]
fn protocol_4_opcodes_are_understood() {
    // {'w': _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 2), 0, (2,), (1,), False, OrderedDict())}
    let mut pkl = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01w\x94".to_vec();
    pkl.extend_from_slice(b"\x8c\x0ctorch._utils\x94\x8c\x12_rebuild_tensor_v2\x94\x93\x94");
    pkl.extend_from_slice(b"((\x8c\x07storage\x94\x8c\x05torch\x94\x8c\x0cFloatStorage\x94\x93\x94");
    pkl.extend_from_slice(b"\x8c\x010\x94\x8c\x03cpu\x94K\x02t\x94QK\x00K\x02\x85\x94K\x01\x85\x94\x89");
    pkl.extend_from_slice(b"\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94t\x94R\x94u.");
    let store = load(&zip_archive("archive", &pkl, "little", &[("0", ramp(4.0, 2))])).unwrap();
    assert_eq!(values(&store, "w"), [4.0, 5.0]);
}

#[test]
fn unknown_opcode_is_reported_with_its_position() {
    // 'd' (DICT) is a protocol-0 opcode torch.save never emits.
    assert_corrupt(load(&pth_with_pickle(b"\x80\x02(d.")), "unsupported pickle opcode 0x64 at byte 3");
}

#[test]
fn broken_pickles_are_errors() {
    for pkl in [
        &b"\x80\x02}q\x00"[..],                                   // no STOP
        b"\x80\x02h\x05.",                                        // memo index never set
        b"\x80\x02(s.",                                           // SETITEM below the mark
        b"\x80\x02X\xff\xff\xff\x7fab.",                          // string longer than the input
        b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.", // 2^64
        b"\x80\x06}.",                                            // protocol 6
        b"\x80\x02}Q.",                                           // persistent id that is a dict
        b"\x80\x02.",                                             // STOP on an empty stack
    ] {
        assert!(matches!(load(&pth_with_pickle(pkl)), Err(Error::CorruptWeights { .. })), "{pkl:?}");
    }
}

#[test]
fn top_level_object_must_be_a_dict() {
    let err = load(&pth_with_pickle(b"\x80\x02K\x03.")).unwrap_err();
    assert!(matches!(&err, Error::NoStateDict(msg) if msg.contains("the int 3")), "{err:?}");
}

#[test]
fn big_endian_archive_is_refused() {
    let root = Node::Ordered(entries(vec![("v", f32_tensor("0", &[1]))]));
    let bytes = zip_archive("archive", &Pickler::pickle(&root), "big", &[("0", ramp(0.0, 1))]);
    assert!(matches!(load(&bytes), Err(Error::Unsupported(_))));
}

#[test]
fn archive_folder_name_may_vary() {
    let root = Node::Ordered(entries(vec![("v", f32_tensor("0", &[1]))]));
    let bytes = zip_archive("net_g_latest", &Pickler::pickle(&root), "little", &[("0", ramp(2.0, 1))]);
    assert_eq!(values(&load(&bytes).unwrap(), "v"), [2.0]);
}

#[test]
fn corrupt_zip_is_an_error() {
    let mut bytes = b"PK\x03\x04".to_vec();
    bytes.extend(std::iter::repeat_n(0xa5, 200));
    assert_corrupt(load(&bytes), "zip");
    let mut valid = basicsr(true);
    let len = valid.len();
    valid[len - 22..len - 18].copy_from_slice(b"XXXX"); // end-of-central-directory signature
    assert!(matches!(load(&valid), Err(Error::CorruptWeights { .. })));
}

#[test]
fn archive_without_exactly_one_data_pkl_is_an_error() {
    let none = zip_of(&[("archive/other.pkl".into(), b"\x80\x02}.")]);
    assert_corrupt(load(&none), "no `<folder>/data.pkl`");
    let two = zip_of(&[("a/data.pkl".into(), b"\x80\x02}."), ("b/data.pkl".into(), b"\x80\x02}.")]);
    assert_corrupt(load(&two), "several");
}

#[test]
fn every_truncation_of_a_pth_is_an_error() {
    let bytes = basicsr(false);
    load(&bytes).unwrap();
    for len in 0..bytes.len() {
        assert!(load(&bytes[..len]).is_err(), "prefix of {len} bytes loaded");
    }
}

// ---- safetensors ------------------------------------------------------------------------------

fn safetensors_file(tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views = tensors.iter().map(|(name, dtype, shape, data)| {
        (*name, safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap())
    });
    safetensors::serialize(views, None).unwrap()
}

fn sample_safetensors() -> Vec<u8> {
    use safetensors::Dtype;
    let f16: Vec<u8> = [0.5f32, -1.5, 4.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let bf16: Vec<u8> = [8.0f32, -0.125].iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    let f64: Vec<u8> = [0.75f64].iter().flat_map(|v| v.to_le_bytes()).collect();
    safetensors_file(&[
        ("module.conv.weight", Dtype::F32, vec![2, 2], f32_bytes(&[1.0, 2.0, 3.0, -4.0])),
        ("module.half", Dtype::F16, vec![3], f16),
        ("module.brain", Dtype::BF16, vec![1, 2], bf16),
        ("module.double", Dtype::F64, vec![], f64),
    ])
}

fn check_sample_safetensors(store: &WeightStore) {
    assert_eq!(store.format(), Format::Safetensors);
    assert_eq!(store.param_key(), None);
    assert_eq!(keys(store), ["brain", "conv.weight", "double", "half"]);
    assert_eq!(values(store, "conv.weight"), [1.0, 2.0, 3.0, -4.0]);
    assert_eq!(shape(store, "conv.weight"), [2, 2]);
    assert_eq!(store.get("half").unwrap().dtype(), DType::F16);
    assert_eq!(values(store, "half"), [0.5, -1.5, 4.0]);
    assert_eq!(store.get("brain").unwrap().dtype(), DType::BF16);
    assert_eq!(values(store, "brain"), [8.0, -0.125]);
    assert_eq!(shape(store, "double"), [] as [usize; 0]);
    assert_eq!(values(store, "double"), [0.75]);
}

#[test]
fn safetensors_round_trip_from_file_and_memory() {
    let bytes = sample_safetensors();
    let file = TempFile::new("sample.safetensors", &bytes);
    check_sample_safetensors(&WeightStore::load(&file.0, &LoadOptions::default()).unwrap());
    check_sample_safetensors(&load(&bytes).unwrap());
}

#[test]
fn safetensors_integer_dtype_is_unsupported() {
    let bytes = safetensors_file(&[("idx", safetensors::Dtype::I32, vec![2], vec![0; 8])]);
    let err = load(&bytes).unwrap_err();
    assert!(matches!(&err, Error::UnsupportedDtype { key, dtype } if key == "idx" && dtype == "i32"), "{err:?}");
}

#[test]
fn safetensors_bad_header_is_corrupt() {
    let mut bytes = 20u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"a\": not json at all");
    assert!(matches!(load(&bytes), Err(Error::CorruptWeights { format: "safetensors", .. })));
}

#[test]
fn a_file_that_is_no_checkpoint_says_so() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10";
    for bytes in [&b"root:x:0:0:root:/root:/bin/bash\n"[..], png] {
        let err = load(bytes).unwrap_err();
        assert!(matches!(&err, Error::CorruptWeights { format: "checkpoint", .. }), "{err:?}");
        assert!(err.to_string().contains("not a checkpoint"), "{err}");
    }
}

#[test]
fn legacy_torch_file_gets_a_clear_error() {
    let bytes = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.";
    assert_corrupt(load(bytes), "legacy");
}

#[test]
fn every_truncation_of_a_safetensors_file_is_an_error() {
    let bytes = sample_safetensors();
    for len in 0..bytes.len() {
        assert!(load(&bytes[..len]).is_err(), "prefix of {len} bytes loaded");
    }
}

// ---- mutation fuzzing: never panic ------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    Xor(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..).prop_map(|(at, x)| Mutation::Xor(at, x)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12)).prop_map(|(at, b)| Mutation::Insert(at, b)),
    ]
}

fn mutate(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in mutations {
        let len = out.len().max(1);
        match m {
            Mutation::Xor(at, x) => {
                if let Some(b) = out.get_mut(at % len) {
                    *b ^= x;
                }
            }
            Mutation::Truncate(at) => out.truncate(at % len),
            Mutation::Insert(at, b) => {
                let at = (at % len).min(out.len());
                out.splice(at..at, b.iter().copied());
            }
        }
    }
    out
}

/// A small `.pth` mixing dicts, an OrderedDict, a parameter and a strided view.
fn fuzz_pickle() -> (Vec<u8>, Vec<(&'static str, Vec<u8>)>) {
    let strided = View { class: "FloatStorage", key: "0", numel: 6, offset: 1, size: vec![2, 2], stride: vec![1, 2] };
    let params =
        Node::Ordered(entries(vec![("a", Node::Tensor(strided)), ("b", Node::Param(view("HalfStorage", "1", &[2])))]));
    let root = Node::Dict(entries(vec![("params", params), ("iter", Node::Int(70000))]));
    (Pickler::pickle(&root), vec![("0", ramp(0.0, 6)), ("1", vec![0, 60, 0, 188])])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_pth_never_panics(mutations in prop::collection::vec(mutation(), 1..5)) {
        let (pkl, blobs) = fuzz_pickle();
        let bytes = zip_archive("archive", &pkl, "little", &blobs);
        let _ = load(&mutate(&bytes, &mutations));
    }

    #[test]
    fn mutated_pickle_never_panics(mutations in prop::collection::vec(mutation(), 1..5)) {
        let (pkl, blobs) = fuzz_pickle();
        let _ = load(&zip_archive("archive", &mutate(&pkl, &mutations), "little", &blobs));
    }

    #[test]
    fn mutated_safetensors_never_panics(mutations in prop::collection::vec(mutation(), 1..5)) {
        let _ = load(&mutate(&sample_safetensors(), &mutations));
    }
}
