//! A minimal protocol-buffers writer: just the wire types ONNX models use (varints, 32-bit
//! floats, length-delimited bytes, strings and nested messages, packed repeated integers).

/// A message being encoded; fields are appended in the order written.
#[derive(Debug, Default, Clone)]
pub struct Message {
    bytes: Vec<u8>,
}

/// Wire type numbers.
const VARINT: u32 = 0;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Message {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    fn key(&mut self, field: u32, wire: u32) {
        put_varint(&mut self.bytes, u64::from(field << 3 | wire));
    }

    /// An `int32` / `int64` / enum field (two's complement for negatives, as protobuf does).
    pub fn int(mut self, field: u32, v: i64) -> Self {
        self.key(field, VARINT);
        put_varint(&mut self.bytes, v as u64);
        self
    }

    /// A `float` field.
    pub fn float(mut self, field: u32, v: f32) -> Self {
        self.key(field, FIXED32);
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A `bytes` field.
    pub fn bytes(mut self, field: u32, v: &[u8]) -> Self {
        self.key(field, LEN);
        put_varint(&mut self.bytes, v.len() as u64);
        self.bytes.extend_from_slice(v);
        self
    }

    /// A `string` field.
    pub fn string(self, field: u32, v: &str) -> Self {
        self.bytes(field, v.as_bytes())
    }

    /// A nested message field.
    pub fn message(self, field: u32, m: &Message) -> Self {
        self.bytes(field, &m.bytes)
    }

    /// A packed `repeated int64` field.
    pub fn packed_ints(self, field: u32, values: &[i64]) -> Self {
        let mut packed = Vec::new();
        for &v in values {
            put_varint(&mut packed, v as u64);
        }
        self.bytes(field, &packed)
    }

    /// The encoded message.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_protobuf_reference_examples() {
        // From the protobuf encoding guide: field 1 = 150 → 08 96 01; field 2 = "testing".
        assert_eq!(Message::new().int(1, 150).into_bytes(), [0x08, 0x96, 0x01]);
        assert_eq!(Message::new().string(2, "testing").into_bytes(), b"\x12\x07testing");
        // Nested: field 3 = { field 1 = 150 } → 1a 03 08 96 01.
        assert_eq!(Message::new().message(3, &Message::new().int(1, 150)).into_bytes(), [0x1a, 0x03, 0x08, 0x96, 0x01]);
        // Negative int64: ten bytes; packed [3, 270] → 22 03 03 8e 02.
        assert_eq!(Message::new().int(1, -1).into_bytes().len(), 11);
        assert_eq!(Message::new().packed_ints(4, &[3, 270]).into_bytes(), [0x22, 0x03, 0x03, 0x8e, 0x02]);
        assert_eq!(Message::new().float(2, 1.0).into_bytes(), [0x15, 0, 0, 0x80, 0x3f]);
    }
}
