//! A restricted reader of the pickles `torch.save` writes: it builds a tree of values and never
//! runs anything.
//!
//! Python's pickle is a small stack machine whose `GLOBAL` + `REDUCE` opcodes call any function
//! of any module: a `.pt` file can run `os.system` on load. This reader understands only the
//! opcodes protocols 2–4 use for dicts, lists, tuples, strings and numbers, and only the globals
//! torch uses to describe tensors (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, the
//! `torch.*Storage` types, `collections.OrderedDict`, `torch.nn.ParameterDict` and the `set` a
//! pickled module's state holds). Each of those is
//! interpreted here by what it means, never called. Any other global is refused by name the
//! moment it appears ([`PickleError::ForbiddenGlobal`]); any other opcode is an error.
//!
//! Sizes are bounded by the input: every length is checked against the bytes left before
//! anything is allocated, and values live in one arena (one entry per opcode at most) referred
//! to by index, so a memo entry used many times is shared, never copied.

use std::collections::HashMap;

/// Where a value lives in a [`Pickle`] (see [`Pickle::value`]).
pub type ValueId = usize;

/// What a restricted pickle can hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<ValueId>),
    List(Vec<ValueId>),
    /// A dict or `OrderedDict`, in insertion order (a repeated key replaces the earlier value).
    Dict(Vec<(ValueId, ValueId)>),
    /// A storage named by `BINPERSID`: the raw data is the archive entry `data/<key>`.
    Storage(StorageRef),
    /// A tensor view of a storage (`_rebuild_tensor_v2`).
    Tensor(TensorRef),
    /// `set(list)`: the list it was made from (its items are never needed).
    Set(ValueId),
    /// One of the allowed globals, not yet applied.
    Global(Global),
    /// An object made by `NEWOBJ` from an allowed class, with the state `BUILD` gave it.
    Object {
        class: Global,
        state: Option<ValueId>,
    },
}

/// The element types of torch's typed storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    F32,
    F16,
    BF16,
    F64,
}

impl StorageDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StorageDtype::F16 | StorageDtype::BF16 => 2,
            StorageDtype::F32 => 4,
            StorageDtype::F64 => 8,
        }
    }
}

/// A storage: its element type, its archive key and its length in elements.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    pub dtype: StorageDtype,
    pub key: String,
    pub numel: u64,
}

/// A strided view into a storage, as `_rebuild_tensor_v2(storage, offset, size, stride, ...)`
/// describes it. Nothing is checked against the storage's length here; the reader of the data
/// does that.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

/// The globals a tensor file may name, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    RebuildTensorV2,
    RebuildParameter,
    OrderedDict,
    Storage(StorageDtype),
    ParameterDict,
    /// Python's `set` (a module's `_non_persistent_buffers_set`), read as a list.
    Set,
}

impl Global {
    /// The allowed global `module.name`, if it is one.
    fn lookup(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch", "FloatStorage") => Global::Storage(StorageDtype::F32),
            ("torch", "HalfStorage") => Global::Storage(StorageDtype::F16),
            ("torch", "BFloat16Storage") => Global::Storage(StorageDtype::BF16),
            ("torch", "DoubleStorage") => Global::Storage(StorageDtype::F64),
            ("torch.nn.modules.container", "ParameterDict") => Global::ParameterDict,
            ("__builtin__" | "builtins", "set") => Global::Set,
            _ => return None,
        })
    }
}

/// Why a pickle was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickleError {
    /// The pickle names a global outside the allowed set (`module.name`).
    ForbiddenGlobal(String),
    /// Truncated, malformed, or using an opcode or construct tensor files do not use.
    Invalid(String),
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PickleError::ForbiddenGlobal(global) => write!(f, "forbidden global {global}"),
            PickleError::Invalid(reason) => f.write_str(reason),
        }
    }
}

type Parse<T> = std::result::Result<T, PickleError>;

fn invalid<T>(reason: impl Into<String>) -> Parse<T> {
    Err(PickleError::Invalid(reason.into()))
}

/// A parsed pickle: every value it made, and the one `STOP` returned.
#[derive(Debug, Clone)]
pub struct Pickle {
    values: Vec<Value>,
    root: ValueId,
}

impl Pickle {
    /// Parse `bytes` (one pickle, up to its `STOP`).
    pub fn parse(bytes: &[u8]) -> Parse<Pickle> {
        Self::parse_prefix(bytes).map(|(pickle, _)| pickle)
    }

    /// Parse the pickle at the start of `bytes`; also returns how many bytes it took (the
    /// legacy torch format writes several pickles back to back).
    pub fn parse_prefix(bytes: &[u8]) -> Parse<(Pickle, usize)> {
        Machine::new(bytes).run()
    }

    /// Every storage the pickle names, in the order it names them (repeats included).
    pub fn storages(&self) -> impl Iterator<Item = &StorageRef> {
        self.values.iter().filter_map(|value| match value {
            Value::Storage(storage) => Some(storage),
            _ => None,
        })
    }

    /// The value `STOP` returned.
    pub fn root(&self) -> ValueId {
        self.root
    }

    /// The value at `id`.
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id]
    }

    /// The string at `id`, if it is one.
    pub fn str(&self, id: ValueId) -> Option<&str> {
        match self.value(id) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entries of the dict at `id` (an `OrderedDict`, or a `ParameterDict`'s parameters),
    /// if it is one.
    pub fn dict(&self, id: ValueId) -> Option<&[(ValueId, ValueId)]> {
        match self.value(id) {
            Value::Dict(entries) => Some(entries),
            Value::Object {
                class: Global::ParameterDict,
                state: Some(state),
            } => self
                .dict_get(*state, "_parameters")
                .and_then(|parameters| self.dict(parameters)),
            _ => None,
        }
    }

    /// The value under the string key `key` of the dict at `id`.
    pub fn dict_get(&self, id: ValueId, key: &str) -> Option<ValueId> {
        self.dict(id)?
            .iter()
            .rev()
            .find(|(k, _)| self.str(*k) == Some(key))
            .map(|&(_, v)| v)
    }

    /// The tensor at `id`, if it is one.
    pub fn tensor(&self, id: ValueId) -> Option<&TensorRef> {
        match self.value(id) {
            Value::Tensor(tensor) => Some(tensor),
            _ => None,
        }
    }
}

/// Deepest nesting of `MARK`s (torch's pickles nest a few levels).
const MAX_MARKS: usize = 1024;

/// Most dimensions a tensor may have.
const MAX_DIMS: usize = 64;

/// The pickle machine's state.
struct Machine<'a> {
    bytes: &'a [u8],
    at: usize,
    values: Vec<Value>,
    stack: Vec<ValueId>,
    marks: Vec<usize>,
    memo: HashMap<u32, ValueId>,
}

impl<'a> Machine<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Machine {
            bytes,
            at: 0,
            values: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> Parse<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        match end {
            Some(end) => {
                let slice = &self.bytes[self.at..end];
                self.at = end;
                Ok(slice)
            }
            None => invalid(format!(
                "truncated: {n} bytes wanted at byte {}, {} left",
                self.at,
                self.bytes.len() - self.at
            )),
        }
    }

    fn array<const N: usize>(&mut self) -> Parse<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Parse<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Parse<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A length-prefixed run of bytes (the length checked against what is left).
    fn sized(&mut self, len: u64) -> Parse<&'a [u8]> {
        let len = usize::try_from(len).map_err(|_| PickleError::Invalid("length".into()))?;
        self.take(len)
    }

    fn line(&mut self) -> Parse<&'a str> {
        let rest = &self.bytes[self.at..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return invalid("truncated: a GLOBAL's name has no end of line");
        };
        let line = self.take(end)?;
        self.at += 1;
        std::str::from_utf8(line).or_else(|_| invalid("a GLOBAL's name is not UTF-8"))
    }

    fn push(&mut self, value: Value) {
        self.values.push(value);
        self.stack.push(self.values.len() - 1);
    }

    fn pop(&mut self) -> Parse<ValueId> {
        match self.stack.pop() {
            Some(id) => Ok(id),
            None => invalid(format!("stack underflow at byte {}", self.at)),
        }
    }

    /// The items pushed since the last `MARK`, which is removed.
    fn pop_mark(&mut self) -> Parse<Vec<ValueId>> {
        let Some(mark) = self.marks.pop() else {
            return invalid(format!("no MARK before byte {}", self.at));
        };
        if mark > self.stack.len() {
            return invalid(format!("MARK above the stack at byte {}", self.at));
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&self) -> Parse<ValueId> {
        match self.stack.last() {
            Some(&id) => Ok(id),
            None => invalid(format!("empty stack at byte {}", self.at)),
        }
    }

    fn memo_get(&mut self, index: u32) -> Parse<()> {
        match self.memo.get(&index) {
            Some(&id) => {
                self.stack.push(id);
                Ok(())
            }
            None => invalid(format!("memo entry {index} read before it was written")),
        }
    }

    fn memo_put(&mut self, index: u32) -> Parse<()> {
        let top = self.top()?;
        self.memo.insert(index, top);
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) -> Parse<()> {
        match Global::lookup(module, name) {
            Some(global) => {
                self.push(Value::Global(global));
                Ok(())
            }
            None => Err(PickleError::ForbiddenGlobal(format!("{module}.{name}"))),
        }
    }

    fn string(&mut self, bytes: &[u8]) -> Parse<()> {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                self.push(Value::Str(s.to_string()));
                Ok(())
            }
            Err(_) => invalid(format!("a string before byte {} is not UTF-8", self.at)),
        }
    }

    fn set_items(&mut self, dict: ValueId, items: Vec<ValueId>) -> Parse<()> {
        if !items.len().is_multiple_of(2) {
            return invalid("SETITEMS with an odd number of items");
        }
        let Value::Dict(entries) = &mut self.values[dict] else {
            return invalid("SETITEM(S) on something that is not a dict");
        };
        for pair in items.chunks_exact(2) {
            entries.push((pair[0], pair[1]));
        }
        Ok(())
    }

    fn append(&mut self, list: ValueId, items: Vec<ValueId>) -> Parse<()> {
        match &mut self.values[list] {
            Value::List(entries) => {
                entries.extend(items);
                Ok(())
            }
            _ => invalid("APPEND(S) on something that is not a list"),
        }
    }

    fn int(&self, id: ValueId, what: &str) -> Parse<i64> {
        match self.values[id] {
            Value::Int(v) => Ok(v),
            _ => invalid(format!("{what}: expected an integer")),
        }
    }

    fn count(&self, id: ValueId, what: &str) -> Parse<u64> {
        u64::try_from(self.int(id, what)?).or_else(|_| invalid(format!("{what}: negative")))
    }

    fn counts(&self, id: ValueId, what: &str) -> Parse<Vec<u64>> {
        let items = self.tuple(id, what)?;
        if items.len() > MAX_DIMS {
            return invalid(format!("{what}: {} dimensions", items.len()));
        }
        items.iter().map(|&i| self.count(i, what)).collect()
    }

    /// The items of a tuple, borrowed: a memoised tuple may be used many times, and copying it
    /// each time would let a small file ask for quadratic memory.
    fn tuple(&self, id: ValueId, what: &str) -> Parse<&[ValueId]> {
        match &self.values[id] {
            Value::Tuple(items) => Ok(items),
            _ => invalid(format!("{what}: expected a tuple")),
        }
    }

    /// `callable(*args)` for an allowed global, by its meaning.
    fn reduce(&self, callable: ValueId, args: ValueId) -> Parse<Value> {
        let Value::Global(global) = self.values[callable] else {
            return invalid("REDUCE on something that is not an allowed global");
        };
        let args = self.tuple(args, "REDUCE arguments")?;
        match global {
            Global::OrderedDict if args.is_empty() => Ok(Value::Dict(Vec::new())),
            Global::Set if args.is_empty() => Ok(Value::List(Vec::new())),
            Global::Set if args.len() == 1 => match &self.values[args[0]] {
                Value::List(_) => Ok(Value::Set(args[0])),
                _ => invalid("set() of something that is not a list"),
            },
            Global::RebuildTensorV2 if (6..=7).contains(&args.len()) => {
                let Value::Storage(storage) = self.values[args[0]].clone() else {
                    return invalid("_rebuild_tensor_v2: the first argument is not a storage");
                };
                let shape = self.counts(args[2], "tensor size")?;
                let stride = self.counts(args[3], "tensor stride")?;
                if shape.len() != stride.len() {
                    return invalid("_rebuild_tensor_v2: size and stride differ in length");
                }
                Ok(Value::Tensor(TensorRef {
                    storage,
                    offset: self.count(args[1], "storage offset")?,
                    shape,
                    stride,
                }))
            }
            Global::RebuildParameter if (2..=3).contains(&args.len()) => {
                match &self.values[args[0]] {
                    tensor @ Value::Tensor(_) => Ok(tensor.clone()),
                    _ => invalid("_rebuild_parameter: the first argument is not a tensor"),
                }
            }
            other => invalid(format!(
                "{other:?} called with {} arguments, not as torch stores tensors",
                args.len()
            )),
        }
    }

    /// `BINPERSID`: torch's `('storage', StorageType, key, location, numel)`; the legacy format
    /// adds a sixth item, `view_metadata`, always `None` for what it writes.
    fn persistent(&self, pid: ValueId) -> Parse<Value> {
        let items = self.tuple(pid, "persistent id")?;
        let (&[kind, class, key, _location, numel] | &[kind, class, key, _location, numel, _]) =
            items
        else {
            return invalid("a persistent id that is not torch's 5-tuple for a storage");
        };
        if let Some(&view) = items.get(5)
            && self.values[view] != Value::None
        {
            return invalid("a storage view (legacy view_metadata), which torch no longer writes");
        }
        if self.values[kind] != Value::Str("storage".into()) {
            return invalid("a persistent id that does not name a storage");
        }
        let Value::Global(Global::Storage(dtype)) = self.values[class] else {
            return invalid("a storage whose type is not a torch float storage");
        };
        let Value::Str(key) = &self.values[key] else {
            return invalid("a storage whose key is not a string");
        };
        Ok(Value::Storage(StorageRef {
            dtype,
            key: key.clone(),
            numel: self.count(numel, "storage length")?,
        }))
    }

    fn run(mut self) -> Parse<(Pickle, usize)> {
        loop {
            let at = self.at;
            let opcode = self.u8()?;
            match opcode {
                0x80 => {
                    let protocol = self.u8()?;
                    if protocol > 5 {
                        return invalid(format!("pickle protocol {protocol}"));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint
                }
                b'}' => self.push(Value::Dict(Vec::new())),
                b']' => self.push(Value::List(Vec::new())),
                b')' => self.push(Value::Tuple(Vec::new())),
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return invalid("MARKs nested too deep");
                    }
                    self.marks.push(self.stack.len());
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(opcode - 0x84);
                    if self.stack.len() < n {
                        return invalid(format!("TUPLE{n} with fewer items on the stack"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::Tuple(items));
                }
                b'q' => {
                    let index = self.u8()?;
                    self.memo_put(u32::from(index))?;
                }
                b'r' => {
                    let index = self.u32()?;
                    self.memo_put(index)?;
                }
                0x94 => {
                    let index = u32::try_from(self.memo.len()).unwrap_or(u32::MAX);
                    self.memo_put(index)?;
                }
                b'h' => {
                    let index = self.u8()?;
                    self.memo_get(u32::from(index))?;
                }
                b'j' => {
                    let index = self.u32()?;
                    self.memo_get(index)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?;
                    self.set_items(dict, vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?;
                    self.set_items(dict, items)?;
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.append(list, vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.append(list, items)?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(i64::from(v)));
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    if n > 8 {
                        return invalid(format!("an integer of {n} bytes"));
                    }
                    let bytes = self.take(n)?;
                    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
                    let mut full = [if negative { 0xff } else { 0 }; 8];
                    full[..n].copy_from_slice(bytes);
                    self.push(Value::Int(i64::from_le_bytes(full)));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Value::Float(v));
                }
                b'X' => {
                    let len = self.u32()?;
                    let bytes = self.sized(u64::from(len))?;
                    self.string(bytes)?;
                }
                0x8c => {
                    let len = self.u8()?;
                    let bytes = self.sized(u64::from(len))?;
                    self.string(bytes)?;
                }
                0x8d => {
                    let len = u64::from_le_bytes(self.array()?);
                    let bytes = self.sized(len)?;
                    self.string(bytes)?;
                }
                b'C' => {
                    let len = self.u8()?;
                    let bytes = self.sized(u64::from(len))?.to_vec();
                    self.push(Value::Bytes(bytes));
                }
                b'B' => {
                    let len = self.u32()?;
                    let bytes = self.sized(u64::from(len))?.to_vec();
                    self.push(Value::Bytes(bytes));
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.values[module], &self.values[name]) {
                        (Value::Str(module), Value::Str(name)) => {
                            let (module, name) = (module.clone(), name.clone());
                            self.global(&module, &name)?;
                        }
                        _ => return invalid("STACK_GLOBAL of something other than two strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = self.reduce(callable, args)?;
                    self.push(value);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let value = self.persistent(pid)?;
                    self.push(value);
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    match self.values[class] {
                        Value::Global(Global::ParameterDict)
                            if self.tuple(args, "NEWOBJ arguments")?.is_empty() =>
                        {
                            self.push(Value::Object {
                                class: Global::ParameterDict,
                                state: None,
                            });
                        }
                        _ => return invalid("NEWOBJ of something other than a ParameterDict"),
                    }
                }
                b'b' => {
                    let state = self.pop()?;
                    let object = self.top()?;
                    match &mut self.values[object] {
                        Value::Object { state: slot, .. } if slot.is_none() => {
                            *slot = Some(state);
                        }
                        _ => return invalid("BUILD on something that is not a new object"),
                    }
                }
                b'.' => {
                    let root = self.pop()?;
                    let length = self.at;
                    let pickle = Pickle {
                        values: self.values,
                        root,
                    };
                    return Ok((pickle, length));
                }
                other => {
                    return invalid(format!(
                        "opcode 0x{other:02x} at byte {at} is not one torch uses to store tensors"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    /// `{"a": 1, "b": [2.5, "x"], "c": None}` in protocol 2, as Python writes it.
    const SMALL_DICT: &[u8] =
        b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(G@\x04\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x04eX\x01\x00\x00\x00cq\x05Nu.";

    #[test]
    fn a_dict_of_numbers_strings_and_lists_reads_back() {
        let pickle = Pickle::parse(SMALL_DICT).unwrap();
        let root = pickle.root();
        assert_eq!(
            pickle.value(pickle.dict_get(root, "a").unwrap()),
            &Value::Int(1)
        );
        let Value::List(items) = pickle.value(pickle.dict_get(root, "b").unwrap()) else {
            panic!("b is not a list");
        };
        assert_eq!(pickle.value(items[0]), &Value::Float(2.5));
        assert_eq!(pickle.str(items[1]), Some("x"));
        assert_eq!(
            pickle.value(pickle.dict_get(root, "c").unwrap()),
            &Value::None
        );
    }

    #[test]
    fn os_system_is_refused_by_name_before_anything_else() {
        // pickle.dumps of a __reduce__ returning (os.system, ("echo pwned",)), protocol 2.
        let evil = b"\x80\x02cos\nsystem\nq\x00X\n\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.";
        assert_eq!(
            Pickle::parse(evil).unwrap_err(),
            PickleError::ForbiddenGlobal("os.system".into())
        );
        // Protocol 4 names globals from the stack.
        let evil4 = b"\x80\x04\x8c\x05posix\x94\x8c\x06system\x94\x93\x94.";
        assert_eq!(
            Pickle::parse(evil4).unwrap_err(),
            PickleError::ForbiddenGlobal("posix.system".into())
        );
    }

    #[test]
    fn an_allowed_global_cannot_be_called_in_another_way() {
        // OrderedDict("x"): a call torch never writes.
        let odd = b"\x80\x02ccollections\nOrderedDict\nX\x01\x00\x00\x00x\x85R.";
        assert!(matches!(
            Pickle::parse(odd).unwrap_err(),
            PickleError::Invalid(_)
        ));
    }

    #[test]
    fn a_tensor_description_becomes_a_tensor_ref() {
        // _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 6), 0, (2, 3), (3, 1), False, OrderedDict())
        let bytes = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtR.";
        let pickle = Pickle::parse(bytes).unwrap();
        let tensor = pickle.tensor(pickle.root()).unwrap();
        assert_eq!(tensor.storage.key, "0");
        assert_eq!(tensor.storage.dtype, StorageDtype::F32);
        assert_eq!(tensor.storage.numel, 6);
        assert_eq!(tensor.shape, vec![2, 3]);
        assert_eq!(tensor.stride, vec![3, 1]);
    }

    #[test]
    fn truncation_anywhere_is_an_error_not_a_panic() {
        for end in 0..SMALL_DICT.len() {
            assert!(
                Pickle::parse(&SMALL_DICT[..end]).is_err(),
                "{end} bytes parsed"
            );
        }
    }

    #[test]
    fn a_huge_declared_length_is_refused_without_allocating_it() {
        let bytes = b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\x7f.";
        assert!(matches!(
            Pickle::parse(bytes).unwrap_err(),
            PickleError::Invalid(_)
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Pickle::parse(&bytes);
        }

        #[test]
        fn flipped_bytes_of_a_valid_pickle_never_panic(
            index in 0..SMALL_DICT.len(),
            byte in any::<u8>(),
        ) {
            let mut bytes = SMALL_DICT.to_vec();
            bytes[index] = byte;
            let _ = Pickle::parse(&bytes);
        }
    }
}
