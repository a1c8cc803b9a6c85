//! Exporters: the op graph written out in other formats, lowered like a backend.

pub mod onnx;
mod protobuf;
