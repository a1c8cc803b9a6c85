//! A restricted unpickler for `torch.save` data: a small stack machine that builds plain data
//! and executes nothing.
//!
//! It reads the opcodes that pickle protocol 2 emits for dicts of tensors (and tolerates the
//! framing and short-form opcodes of protocols 3–5). The only Python callables it accepts are
//! an allowlist that it interprets itself: `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter[_with_state]` and the
//! legacy `torch.*Storage` classes. Any other global is refused the moment it is named.
//!
//! Containers (tuples, lists, dicts, storages, tensors) live in one table and values refer to
//! them by index. That keeps Python's reference semantics for memoised objects, makes every
//! clone O(1) (so memo reuse cannot blow up memory), and means no input can build a structure
//! whose drop or traversal recurses. Every opcode consumes at least one input byte and creates
//! at most one stack entry, memo entry or object, so memory stays linear in the input size.

use std::collections::HashMap;
use std::rc::Rc;

use super::DType;
use crate::error::{Error, Result};

/// A legacy torch storage class (`torch.FloatStorage`, ...): the element type of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StorageType {
    /// The element type, when it is one the crate can use.
    pub dtype: Option<DType>,
    /// Short element-type name for messages (`f32`, `i64`, ...).
    pub name: &'static str,
}

/// The storage classes accepted as data: `(class name, dtype, element name)`. Integer and bool
/// storages are accepted by the reader so that a state dict holding them (e.g. a
/// `relative_position_index` buffer) is reported as an unsupported dtype, not as a hostile file.
const STORAGE_TYPES: [(&str, Option<DType>, &str); 10] = [
    ("FloatStorage", Some(DType::F32), "f32"),
    ("HalfStorage", Some(DType::F16), "f16"),
    ("BFloat16Storage", Some(DType::BF16), "bf16"),
    ("DoubleStorage", Some(DType::F64), "f64"),
    ("LongStorage", None, "i64"),
    ("IntStorage", None, "i32"),
    ("ShortStorage", None, "i16"),
    ("CharStorage", None, "i8"),
    ("ByteStorage", None, "u8"),
    ("BoolStorage", None, "bool"),
];

/// A Python callable from the allowlist, interpreted by this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Global {
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter`.
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state`.
    RebuildParameterWithState,
    /// `torch.<Type>Storage`.
    Storage(StorageType),
}

/// Maps `module.name` to an allowlisted callable, or refuses it.
fn resolve_global(module: &str, name: &str) -> Result<Global> {
    let global = match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state") => Some(Global::RebuildParameterWithState),
        ("torch", class) => STORAGE_TYPES
            .iter()
            .find(|(n, ..)| *n == class)
            .map(|&(_, dtype, name)| Global::Storage(StorageType { dtype, name })),
        _ => None,
    };
    global.ok_or_else(|| Error::ForbiddenGlobal { module: module.to_owned(), name: name.to_owned() })
}

/// A storage blob of the archive (`data/<key>`) as named by a persistent id.
#[derive(Debug, Clone)]
pub(super) struct StorageRef {
    /// Element type of the blob.
    pub ty: StorageType,
    /// Entry name under `data/`.
    pub key: Rc<str>,
    /// Number of elements in the blob.
    pub numel: usize,
}

/// A strided view over a storage, as described to `_rebuild_tensor_v2` (all in elements).
#[derive(Debug, Clone)]
pub(super) struct TensorRef {
    /// The storage viewed.
    pub storage: StorageRef,
    /// Index of the first element in the storage.
    pub offset: usize,
    /// Shape.
    pub size: Vec<usize>,
    /// Stride of each dimension.
    pub stride: Vec<usize>,
}

/// Index of an object in [`Pickle`]'s table.
type ObjId = usize;

/// A value on the stack, in the memo or inside a container.
#[derive(Debug, Clone)]
pub(super) enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A text string.
    Str(Rc<str>),
    /// A byte string.
    Bytes(Rc<[u8]>),
    /// An allowlisted callable.
    Global(Global),
    /// A container or torch object, by index into the object table.
    Obj(ObjId),
}

/// A container or torch object built by the unpickler.
#[derive(Debug)]
pub(super) enum Object {
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A set (elements kept in insertion order, duplicates not merged).
    Set(Vec<Value>),
    /// A dict or `OrderedDict`, pairs in insertion order (later duplicates win on lookup).
    Dict(Vec<(Value, Value)>),
    /// A storage reference from a persistent id.
    Storage(StorageRef),
    /// A tensor from `_rebuild_tensor_v2`.
    Tensor(TensorRef),
}

/// The result of unpickling: the object table and the root value.
#[derive(Debug)]
pub(super) struct Pickle {
    objects: Vec<Object>,
    root: Value,
}

impl Pickle {
    /// The value the pickle stopped on.
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// The object `value` refers to, if it is one.
    pub fn object(&self, value: &Value) -> Option<&Object> {
        match value {
            Value::Obj(id) => self.objects.get(*id),
            _ => None,
        }
    }

    /// The pairs of `value` if it is a dict.
    pub fn dict(&self, value: &Value) -> Option<&[(Value, Value)]> {
        match self.object(value) {
            Some(Object::Dict(pairs)) => Some(pairs),
            _ => None,
        }
    }

    /// A short human description of `value` for messages (`a dict`, `the int 3`, ...).
    pub fn describe(&self, value: &Value) -> String {
        match value {
            Value::None => "None".into(),
            Value::Bool(b) => format!("the bool {b}"),
            Value::Int(i) => format!("the int {i}"),
            Value::Float(f) => format!("the float {f}"),
            Value::Str(s) => format!("the string {:?}", truncate(s, 60)),
            Value::Bytes(b) => format!("{} bytes", b.len()),
            Value::Global(g) => format!("the callable {g:?}"),
            Value::Obj(_) => match self.object(value) {
                Some(Object::Tuple(items)) => format!("a tuple of {}", items.len()),
                Some(Object::List(items)) => format!("a list of {}", items.len()),
                Some(Object::Set(items)) => format!("a set of {}", items.len()),
                Some(Object::Dict(pairs)) => format!("a dict of {}", pairs.len()),
                Some(Object::Storage(_)) => "a bare storage".into(),
                Some(Object::Tensor(_)) => "a tensor".into(),
                None => "a dangling reference".into(),
            },
        }
    }
}

/// At most `max` characters of `s`.
fn truncate(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
}

/// Runs the restricted unpickler over `data`.
pub(super) fn unpickle(data: &[u8]) -> Result<Pickle> {
    let mut machine = Machine {
        input: data,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        objects: Vec::new(),
    };
    let root = machine.run()?;
    Ok(Pickle { objects: machine.objects, root })
}

/// Highest pickle protocol understood.
const MAX_PROTOCOL: u8 = 5;

/// The unpickler state.
struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    op_pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objects: Vec<Object>,
}

impl<'a> Machine<'a> {
    /// Executes opcodes until STOP and returns the value on top of the stack.
    fn run(&mut self) -> Result<Value> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            if op == b'.' {
                return self.pop();
            }
            self.step(op)?;
        }
    }

    /// Executes one opcode (other than STOP).
    fn step(&mut self, op: u8) -> Result<()> {
        match op {
            0x80 => self.proto(),
            0x95 => self.take(8).map(drop), // FRAME: framing is irrelevant when all bytes are here
            b'(' => {
                self.marks.push(self.stack.len());
                Ok(())
            }
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'K' => self.u8().and_then(|v| self.push(Value::Int(v.into()))),
            b'M' => self.u16().and_then(|v| self.push(Value::Int(v.into()))),
            b'J' => self.i32().and_then(|v| self.push(Value::Int(v.into()))),
            0x8a => self.long1(),
            b'G' => self.binfloat(),
            b'X' => self.len_u32().and_then(|n| self.unicode(n)),
            0x8c => self.len_u8().and_then(|n| self.unicode(n)),
            0x8d => self.len_u64().and_then(|n| self.unicode(n)),
            b'T' => self.len_i32().and_then(|n| self.binstring(n)),
            b'U' => self.len_u8().and_then(|n| self.binstring(n)),
            b'B' => self.len_u32().and_then(|n| self.binbytes(n)),
            b'C' => self.len_u8().and_then(|n| self.binbytes(n)),
            0x8e => self.len_u64().and_then(|n| self.binbytes(n)),
            b'}' => self.push_object(Object::Dict(Vec::new())),
            b']' => self.push_object(Object::List(Vec::new())),
            b')' => self.push_object(Object::Tuple(Vec::new())),
            0x8f => self.push_object(Object::Set(Vec::new())),
            b't' => self.pop_mark().and_then(|items| self.push_object(Object::Tuple(items))),
            0x85 => self.tuple_n(1),
            0x86 => self.tuple_n(2),
            0x87 => self.tuple_n(3),
            b'q' => self.u8().and_then(|i| self.put(i.into())),
            b'r' => self.u32().and_then(|i| self.put(i)),
            0x94 => self.memoize(),
            b'h' => self.u8().and_then(|i| self.get(i.into())),
            b'j' => self.u32().and_then(|i| self.get(i)),
            b's' => self.setitem(),
            b'u' => self.setitems(),
            b'a' => self.append(),
            b'e' => self.appends(),
            0x90 => self.additems(),
            b'c' => self.global(),
            0x93 => self.stack_global(),
            b'R' => self.reduce(),
            b'b' => self.build(),
            b'Q' => self.binpersid(),
            _ => Err(self.error(format!("unsupported pickle opcode 0x{op:02x}"))),
        }
    }

    // ---- errors and raw input -------------------------------------------------------------

    /// A corrupt-pickle error located at the current opcode.
    fn error(&self, what: impl std::fmt::Display) -> Error {
        Error::corrupt("pickle", format!("{what} at byte {}", self.op_pos))
    }

    /// The next `n` input bytes.
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let input: &'a [u8] = self.input;
        let end = self.pos.checked_add(n).filter(|&end| end <= input.len());
        let end = end.ok_or_else(|| {
            self.error(format!("truncated pickle: {n} bytes needed, {} left", input.len() - self.pos))
        })?;
        let bytes = &input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// The next `N` input bytes as an array.
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Result<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn i32(&mut self) -> Result<i32> {
        self.array().map(i32::from_le_bytes)
    }

    fn len_u8(&mut self) -> Result<usize> {
        self.u8().map(usize::from)
    }

    fn len_u32(&mut self) -> Result<usize> {
        let n = self.u32()?;
        usize::try_from(n).map_err(|_| self.error(format!("length {n} too large")))
    }

    fn len_i32(&mut self) -> Result<usize> {
        let n = self.i32()?;
        usize::try_from(n).map_err(|_| self.error(format!("negative length {n}")))
    }

    fn len_u64(&mut self) -> Result<usize> {
        let n = self.array().map(u64::from_le_bytes)?;
        usize::try_from(n).map_err(|_| self.error(format!("length {n} too large")))
    }

    /// A `\n`-terminated UTF-8 line (the operands of GLOBAL).
    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.input[self.pos..];
        let len = rest.iter().position(|&b| b == b'\n').ok_or_else(|| self.error("unterminated GLOBAL name"))?;
        let line = self.take(len + 1)?;
        std::str::from_utf8(&line[..len]).map_err(|_| self.error("GLOBAL name is not UTF-8"))
    }

    // ---- stack, marks, memo ---------------------------------------------------------------

    /// Lowest stack index the current mark lets opcodes touch.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, value: Value) -> Result<()> {
        self.stack.push(value);
        Ok(())
    }

    fn push_object(&mut self, object: Object) -> Result<()> {
        let value = self.new_object(object);
        self.push(value)
    }

    fn new_object(&mut self, object: Object) -> Value {
        self.objects.push(object);
        Value::Obj(self.objects.len() - 1)
    }

    fn pop(&mut self) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.error("pickle stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.error("pickle stack underflow"))
    }

    fn top(&self) -> Result<&Value> {
        match self.stack.last() {
            Some(value) if self.stack.len() > self.floor() => Ok(value),
            _ => Err(self.error("pickle stack underflow")),
        }
    }

    /// Pops everything above the most recent MARK, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| self.error("no MARK on the pickle stack"))?;
        Ok(self.stack.split_off(mark))
    }

    fn put(&mut self, index: u32) -> Result<()> {
        let value = self.top()?.clone();
        self.memo.insert(index, value);
        Ok(())
    }

    fn memoize(&mut self) -> Result<()> {
        let index = u32::try_from(self.memo.len()).map_err(|_| self.error("memo is full"))?;
        self.put(index)
    }

    fn get(&mut self, index: u32) -> Result<()> {
        let value = self.memo.get(&index).cloned();
        let value = value.ok_or_else(|| self.error(format!("memo index {index} was never set")))?;
        self.push(value)
    }

    /// The object that `value` refers to, mutably.
    fn object_mut(&mut self, value: &Value) -> Option<&mut Object> {
        match value {
            Value::Obj(id) => self.objects.get_mut(*id),
            _ => None,
        }
    }

    // ---- scalars and strings --------------------------------------------------------------

    fn proto(&mut self) -> Result<()> {
        let version = self.u8()?;
        if version > MAX_PROTOCOL {
            return Err(self.error(format!("unsupported pickle protocol {version}")));
        }
        Ok(())
    }

    fn long1(&mut self) -> Result<()> {
        let n = self.len_u8()?;
        let bytes = self.take(n)?;
        let value = long_from_le(bytes).ok_or_else(|| self.error("integer does not fit in 64 bits"))?;
        self.push(Value::Int(value))
    }

    fn binfloat(&mut self) -> Result<()> {
        let value = self.array().map(f64::from_be_bytes)?;
        self.push(Value::Float(value))
    }

    fn unicode(&mut self, n: usize) -> Result<()> {
        let bytes = self.take(n)?;
        let text = std::str::from_utf8(bytes).map_err(|_| self.error("string is not UTF-8"))?;
        self.push(Value::Str(text.into()))
    }

    /// BINSTRING / SHORT_BINSTRING (Python 2 `str`): text when it is UTF-8, bytes otherwise.
    fn binstring(&mut self, n: usize) -> Result<()> {
        let bytes = self.take(n)?;
        let value = std::str::from_utf8(bytes).map_or_else(|_| Value::Bytes(bytes.into()), |s| Value::Str(s.into()));
        self.push(value)
    }

    fn binbytes(&mut self, n: usize) -> Result<()> {
        let bytes = self.take(n)?;
        self.push(Value::Bytes(bytes.into()))
    }

    // ---- containers -----------------------------------------------------------------------

    fn tuple_n(&mut self, n: usize) -> Result<()> {
        let mut items = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>>>()?;
        items.reverse();
        self.push_object(Object::Tuple(items))
    }

    fn setitem(&mut self) -> Result<()> {
        let value = self.pop()?;
        let key = self.pop()?;
        self.extend_dict(vec![key, value])
    }

    fn setitems(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        if items.len() % 2 != 0 {
            return Err(self.error("SETITEMS with an odd number of items"));
        }
        self.extend_dict(items)
    }

    /// Adds `items` (key, value, key, value, ...) to the dict on top of the stack.
    fn extend_dict(&mut self, items: Vec<Value>) -> Result<()> {
        let target = self.top()?.clone();
        let Some(Object::Dict(pairs)) = self.object_mut(&target) else {
            return Err(self.error("SETITEM(S) on something that is not a dict"));
        };
        let mut items = items.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            pairs.push((key, value));
        }
        Ok(())
    }

    fn append(&mut self) -> Result<()> {
        let value = self.pop()?;
        self.extend_sequence(vec![value])
    }

    fn appends(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        self.extend_sequence(items)
    }

    fn additems(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        self.extend_sequence(items)
    }

    /// Adds `items` to the list or set on top of the stack.
    fn extend_sequence(&mut self, items: Vec<Value>) -> Result<()> {
        let target = self.top()?.clone();
        match self.object_mut(&target) {
            Some(Object::List(list) | Object::Set(list)) => {
                list.extend(items);
                Ok(())
            }
            _ => Err(self.error("APPEND(S)/ADDITEMS on something that is not a list or set")),
        }
    }

    // ---- globals, calls, persistent ids ---------------------------------------------------

    fn global(&mut self) -> Result<()> {
        let module = self.line()?;
        let name = self.line()?;
        let global = resolve_global(module, name)?;
        self.push(Value::Global(global))
    }

    fn stack_global(&mut self) -> Result<()> {
        let name = self.pop()?;
        let module = self.pop()?;
        let (Value::Str(module), Value::Str(name)) = (module, name) else {
            return Err(self.error("STACK_GLOBAL operands are not strings"));
        };
        let global = resolve_global(&module, &name)?;
        self.push(Value::Global(global))
    }

    /// REDUCE: applies an allowlisted callable to an argument tuple, by interpretation.
    fn reduce(&mut self) -> Result<()> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let value = match self.apply(&callable, &args)? {
            Made::New(object) => self.new_object(object),
            Made::Same(value) => value,
        };
        self.push(value)
    }

    /// What calling `callable` on the tuple `args` produces.
    fn apply(&self, callable: &Value, args: &Value) -> Result<Made> {
        let Some(Object::Tuple(args)) = self.object(args) else {
            return Err(self.error("REDUCE arguments are not a tuple"));
        };
        match callable {
            Value::Global(Global::OrderedDict) if args.is_empty() => Ok(Made::New(Object::Dict(Vec::new()))),
            Value::Global(Global::RebuildTensorV2) => self.rebuild_tensor(args).map(Made::New),
            Value::Global(Global::RebuildParameter) => self.rebuild_parameter(args, 3).map(Made::Same),
            Value::Global(Global::RebuildParameterWithState) => self.rebuild_parameter(args, 4).map(Made::Same),
            Value::Global(global) => Err(self.error(format!("cannot call {global:?} with {} arguments", args.len()))),
            _ => Err(self.error("REDUCE on a value that is not callable")),
        }
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    fn rebuild_tensor(&self, args: &[Value]) -> Result<Object> {
        let [storage, offset, size, stride, _requires_grad, _hooks, _metadata @ ..] = args else {
            return Err(self.error(format!("_rebuild_tensor_v2 takes 6 or 7 arguments, got {}", args.len())));
        };
        if args.len() > 7 {
            return Err(self.error(format!("_rebuild_tensor_v2 takes 6 or 7 arguments, got {}", args.len())));
        }
        let Some(Object::Storage(storage)) = self.object(storage) else {
            return Err(self.error("_rebuild_tensor_v2 storage argument is not a storage"));
        };
        let size = self.dims(size, "size")?;
        let stride = self.dims(stride, "stride")?;
        if size.len() != stride.len() {
            return Err(self.error(format!("tensor size {size:?} and stride {stride:?} differ in rank")));
        }
        let offset = self.non_negative(offset, "storage offset")?;
        Ok(Object::Tensor(TensorRef { storage: storage.clone(), offset, size, stride }))
    }

    /// `_rebuild_parameter(tensor, requires_grad, hooks[, state])`: the tensor itself.
    fn rebuild_parameter(&self, args: &[Value], arity: usize) -> Result<Value> {
        match args.first() {
            Some(tensor) if args.len() == arity && matches!(self.object(tensor), Some(Object::Tensor(_))) => {
                Ok(tensor.clone())
            }
            _ => Err(self.error(format!("_rebuild_parameter expects a tensor and {} more arguments", arity - 1))),
        }
    }

    /// A tuple of at most [`MAX_RANK`] non-negative ints (a tensor's size or stride).
    fn dims(&self, value: &Value, what: &str) -> Result<Vec<usize>> {
        let Some(Object::Tuple(items)) = self.object(value) else {
            return Err(self.error(format!("tensor {what} is not a tuple")));
        };
        if items.len() > MAX_RANK {
            return Err(self.error(format!("tensor {what} has {} dimensions (at most {MAX_RANK})", items.len())));
        }
        items.iter().map(|item| self.non_negative(item, what)).collect()
    }

    /// `value` as a non-negative int.
    fn non_negative(&self, value: &Value, what: &str) -> Result<usize> {
        match value {
            Value::Int(i) => {
                usize::try_from(*i).map_err(|_| self.error(format!("{what} {i} is negative or too large")))
            }
            _ => Err(self.error(format!("{what} is not an int"))),
        }
    }

    /// BUILD: sets an object's state. Only dicts (an `OrderedDict`'s `_metadata`) are accepted,
    /// and the state is dropped.
    fn build(&mut self) -> Result<()> {
        self.pop()?;
        match self.object(self.top()?) {
            Some(Object::Dict(_)) => Ok(()),
            _ => Err(self.error("BUILD on something that is not a dict")),
        }
    }

    /// BINPERSID: `('storage', <storage class>, key, location, numel)` becomes a storage reference.
    fn binpersid(&mut self) -> Result<()> {
        let pid = self.pop()?;
        let storage = self.storage_ref(&pid)?;
        self.push_object(Object::Storage(storage))
    }

    fn storage_ref(&self, pid: &Value) -> Result<StorageRef> {
        let Some(Object::Tuple(items)) = self.object(pid) else {
            return Err(self.error("persistent id is not a tuple"));
        };
        match items.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(ty)), Value::Str(key), Value::Str(_location), numel]
                if &**tag == "storage" =>
            {
                let numel = self.non_negative(numel, "storage size")?;
                Ok(StorageRef { ty: *ty, key: key.clone(), numel })
            }
            _ => Err(self.error("persistent id is not ('storage', torch.<Type>Storage, key, location, size)")),
        }
    }

    /// The object `value` refers to, if it is one.
    fn object(&self, value: &Value) -> Option<&Object> {
        match value {
            Value::Obj(id) => self.objects.get(*id),
            _ => None,
        }
    }
}

/// The result of interpreting a call.
enum Made {
    /// A new object to add to the table.
    New(Object),
    /// An existing value passed through (a parameter is its tensor).
    Same(Value),
}

/// Most dimensions accepted for a tensor; bounds the work per REDUCE (state dicts use at most 5 or 6).
const MAX_RANK: usize = 64;

/// A little-endian two's-complement integer (LONG1), if it fits in an `i64`.
fn long_from_le(bytes: &[u8]) -> Option<i64> {
    let Some(&last) = bytes.last() else {
        return Some(0);
    };
    let fill = if last & 0x80 == 0 { 0 } else { 0xff };
    let (low, high) = bytes.split_at(bytes.len().min(8));
    let mut buf = [fill; 8];
    buf[..low.len()].copy_from_slice(low);
    let value = i64::from_le_bytes(buf);
    let fits = high.iter().all(|&b| b == fill) && (value < 0) == (fill == 0xff);
    fits.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long1_is_twos_complement_within_64_bits() {
        assert_eq!(long_from_le(&[]), Some(0));
        assert_eq!(long_from_le(&[0xff]), Some(-1));
        assert_eq!(long_from_le(&[0x80, 0x00]), Some(128));
        assert_eq!(long_from_le(&[0, 0, 0, 0, 0, 0, 0, 0x80]), Some(i64::MIN));
        assert_eq!(long_from_le(&[0xff; 9]), Some(-1));
        assert_eq!(long_from_le(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]), None); // 2^63
        assert_eq!(long_from_le(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), None); // 2^64
    }

    #[test]
    fn memoised_dict_is_shared_not_copied() {
        // {'a': d, 'b': d} where d = {'k': 5} is filled after it was memoised.
        let pickle =
            unpickle(b"\x80\x02}q\x00(X\x01\x00\x00\x00a}q\x01(X\x01\x00\x00\x00kK\x05uX\x01\x00\x00\x00bh\x01u.")
                .unwrap();
        let root = pickle.dict(pickle.root()).unwrap();
        assert_eq!(root.len(), 2);
        for (_, value) in root {
            assert!(matches!(pickle.dict(value), Some([(Value::Str(k), Value::Int(5))]) if &**k == "k"));
        }
    }

    #[test]
    fn deep_nesting_neither_recurses_nor_overflows() {
        let mut data = b"\x80\x02)".to_vec();
        data.extend(std::iter::repeat_n(0x85, 200_000)); // TUPLE1, 200k levels deep
        data.push(b'.');
        let pickle = unpickle(&data).unwrap();
        assert_eq!(pickle.describe(pickle.root()), "a tuple of 1");
    }

    #[test]
    fn ops_cannot_reach_below_the_mark() {
        let err = unpickle(b"\x80\x02K\x01K\x02(\x86.").unwrap_err();
        assert!(err.to_string().contains("stack underflow at byte 7"), "{err}");
    }
}
