//! The three req/resp logical messages: [`Request`], [`ResponseChunk`] and
//! [`ResponseEnd`], with the identifiers they carry.
//!
//! Each is one logical message of the codec layer (`kind u8 || body`); its
//! first byte is one of [`REQUEST_KIND`], [`RESPONSE_CHUNK_KIND`],
//! [`RESPONSE_END_KIND`]. Integers are big-endian and fixed-width.

use std::fmt;

use super::error::ReqRespDecodeError;
use super::limits::{
    APPLICATION_REQUEST_BYTES_MAX, APPLICATION_RESPONSE_BYTES_MAX, BLOCK_BYTES_MAX,
    ERROR_MESSAGE_BYTES_MAX, FIND_NODE_ANSWER_BYTES_MAX, FIND_NODE_REQUEST_BYTES,
    PEER_RECORD_ANSWER_BYTES_MAX, PROTOCOL_NAME_BYTES_MAX, RESPONSE_PAYLOAD_BYTES_MAX,
};
use super::snappy;
use super::{bodies, bodies::Body};

/// Kind byte of a [`Request`]. Kinds 16..=31 are reserved for req/resp.
pub const REQUEST_KIND: u8 = 16;
/// Kind byte of a [`ResponseChunk`].
pub const RESPONSE_CHUNK_KIND: u8 = 17;
/// Kind byte of a [`ResponseEnd`].
pub const RESPONSE_END_KIND: u8 = 18;

/// Bytes before a request's body: kind, id, tag, and for an application
/// protocol the name's length and the name.
pub const REQUEST_HEADER_BYTES_MAX: usize = 1 + 8 + 1 + 1 + PROTOCOL_NAME_BYTES_MAX;
/// Bytes before a response chunk's payload: kind, id, result code.
pub const RESPONSE_CHUNK_HEADER_BYTES: usize = 1 + 8 + 1;
/// Bytes of a whole response end: kind and id.
pub const RESPONSE_END_BYTES: usize = 1 + 8;

/// Names one request and its response on one connection. Allocated by the
/// requester from a counter; the responder echoes it.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The name of an application protocol: 1 to [`PROTOCOL_NAME_BYTES_MAX`]
/// bytes of printable ASCII (`0x21..=0x7E`, so no spaces or control
/// characters reach a log). Stored inline so [`ProtocolId`] is `Copy`.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ProtocolName {
    length: u8,
    #[serde(with = "crate::serial::byte_array")]
    bytes: [u8; PROTOCOL_NAME_BYTES_MAX],
}

impl ProtocolName {
    /// The name `name`, or `None` if it is empty, too long or not printable ASCII.
    pub fn new(name: &str) -> Option<ProtocolName> {
        ProtocolName::from_bytes(name.as_bytes())
    }

    /// The name in `bytes`, or `None` if they are empty, too long or not printable ASCII.
    pub fn from_bytes(name: &[u8]) -> Option<ProtocolName> {
        if name.is_empty() || name.len() > PROTOCOL_NAME_BYTES_MAX || !is_printable_ascii(name) {
            return None;
        }
        let mut bytes = [0; PROTOCOL_NAME_BYTES_MAX];
        bytes[..name.len()].copy_from_slice(name);
        Some(ProtocolName {
            // Cannot truncate: at most PROTOCOL_NAME_BYTES_MAX, checked below u8::MAX in limits.rs.
            length: name.len() as u8,
            bytes,
        })
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.length)]
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("checked to be ASCII at construction")
    }
}

impl fmt::Debug for ProtocolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for ProtocolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which protocol a request speaks.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
pub enum ProtocolId {
    /// Tag 1: exchange chain status (request and response: [`bodies::Status`]).
    Status,
    /// Tag 2: liveness and metadata freshness ([`bodies::Ping`] both ways).
    Ping,
    /// Tag 3: fetch the peer's metadata (empty request, [`bodies::Metadata`] response).
    Metadata,
    /// Tag 4: the sender is leaving ([`bodies::Goodbye`]); one-way, never answered.
    Goodbye,
    /// Tag 5: blocks by slot range ([`bodies::BlocksByRangeRequest`], block chunks).
    BlocksByRange,
    /// Tag 6: blocks by root ([`bodies::BlocksByRootRequest`], block chunks).
    BlocksByRoot,
    /// Tag 7: discovery's FIND_NODE (a 32-byte target key; one chunk of
    /// the records nearest it). Served only by nodes that run discovery.
    FindNode,
    /// Tag 8: discovery's record exchange (empty request; one chunk, the
    /// responder's own signed record). Served only by nodes that run discovery.
    PeerRecord,
    /// Tag 128: a protocol an application registered by name; opaque bodies.
    Application(ProtocolName),
}

impl ProtocolId {
    /// Every built-in protocol, in tag order.
    pub const BUILT_IN: [ProtocolId; 6] = [
        ProtocolId::Status,
        ProtocolId::Ping,
        ProtocolId::Metadata,
        ProtocolId::Goodbye,
        ProtocolId::BlocksByRange,
        ProtocolId::BlocksByRoot,
    ];

    /// The tag byte on the wire.
    pub const fn tag(&self) -> u8 {
        match self {
            ProtocolId::Status => 1,
            ProtocolId::Ping => 2,
            ProtocolId::Metadata => 3,
            ProtocolId::Goodbye => 4,
            ProtocolId::BlocksByRange => 5,
            ProtocolId::BlocksByRoot => 6,
            ProtocolId::FindNode => 7,
            ProtocolId::PeerRecord => 8,
            ProtocolId::Application(_) => 128,
        }
    }

    /// Largest uncompressed request body.
    pub const fn request_bytes_max(&self) -> usize {
        match self {
            ProtocolId::Status => bodies::Status::BYTES_MAX,
            ProtocolId::Ping => bodies::Ping::BYTES_MAX,
            ProtocolId::Metadata => bodies::MetadataRequest::BYTES_MAX,
            ProtocolId::Goodbye => bodies::Goodbye::BYTES_MAX,
            ProtocolId::BlocksByRange => bodies::BlocksByRangeRequest::BYTES_MAX,
            ProtocolId::BlocksByRoot => bodies::BlocksByRootRequest::BYTES_MAX,
            ProtocolId::FindNode => FIND_NODE_REQUEST_BYTES,
            ProtocolId::PeerRecord => 0,
            ProtocolId::Application(_) => APPLICATION_REQUEST_BYTES_MAX,
        }
    }

    /// Largest uncompressed payload of one success chunk (0: never answered).
    pub const fn response_bytes_max(&self) -> usize {
        match self {
            ProtocolId::Status => bodies::Status::BYTES_MAX,
            ProtocolId::Ping => bodies::Ping::BYTES_MAX,
            ProtocolId::Metadata => bodies::Metadata::BYTES_MAX,
            ProtocolId::Goodbye => 0,
            ProtocolId::BlocksByRange | ProtocolId::BlocksByRoot => BLOCK_BYTES_MAX,
            ProtocolId::FindNode => FIND_NODE_ANSWER_BYTES_MAX,
            ProtocolId::PeerRecord => PEER_RECORD_ANSWER_BYTES_MAX,
            ProtocolId::Application(_) => APPLICATION_RESPONSE_BYTES_MAX,
        }
    }

    /// Whether a request is answered at all. Goodbye is not: the sender
    /// closes the connection right after it.
    pub const fn expects_response(&self) -> bool {
        !matches!(self, ProtocolId::Goodbye)
    }

    /// Whether serving it draws on the global serving budget (see
    /// `GLOBAL_SERVING_QUOTA`): the protocols whose answers are costly.
    pub const fn draws_on_global_quota(&self) -> bool {
        matches!(
            self,
            ProtocolId::BlocksByRange | ProtocolId::BlocksByRoot | ProtocolId::Application(_)
        )
    }
}

impl fmt::Display for ProtocolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolId::Status => f.write_str("status"),
            ProtocolId::Ping => f.write_str("ping"),
            ProtocolId::Metadata => f.write_str("metadata"),
            ProtocolId::Goodbye => f.write_str("goodbye"),
            ProtocolId::BlocksByRange => f.write_str("blocks_by_range"),
            ProtocolId::BlocksByRoot => f.write_str("blocks_by_root"),
            ProtocolId::FindNode => f.write_str("find_node"),
            ProtocolId::PeerRecord => f.write_str("peer_record"),
            ProtocolId::Application(name) => write!(f, "app:{name}"),
        }
    }
}

/// The result code of a response chunk.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
pub enum ResultCode {
    /// 0: the payload is an answer.
    Success,
    /// 1: the request was malformed or not understood; the payload is an error message.
    InvalidRequest,
    /// 2: the responder failed; the payload is an error message.
    ServerError,
    /// 3: the responder will not answer now (rate limited, busy, or does not
    /// have the data); the payload is an error message.
    ResourceUnavailable,
    /// 4..=127: reserved for future codes. Decoded so newer peers do not look
    /// malformed, and treated as an error by every caller.
    Reserved(u8),
}

impl ResultCode {
    /// The code for a byte; 128 and above are invalid.
    pub fn from_byte(byte: u8) -> Result<ResultCode, ReqRespDecodeError> {
        match byte {
            0 => Ok(ResultCode::Success),
            1 => Ok(ResultCode::InvalidRequest),
            2 => Ok(ResultCode::ServerError),
            3 => Ok(ResultCode::ResourceUnavailable),
            4..=127 => Ok(ResultCode::Reserved(byte)),
            _ => Err(ReqRespDecodeError::InvalidResultCode(byte)),
        }
    }

    /// The byte on the wire.
    ///
    /// # Panics
    /// On `Reserved(n)` with `n` outside `4..=127`: only the decoder makes
    /// `Reserved`, so another value is a bug.
    pub fn to_byte(self) -> u8 {
        match self {
            ResultCode::Success => 0,
            ResultCode::InvalidRequest => 1,
            ResultCode::ServerError => 2,
            ResultCode::ResourceUnavailable => 3,
            ResultCode::Reserved(byte) => {
                assert!(
                    (4..=127).contains(&byte),
                    "reserved code {byte} out of range"
                );
                byte
            }
        }
    }

    /// Whether the chunk carries an answer (code 0).
    pub fn is_success(self) -> bool {
        self == ResultCode::Success
    }
}

/// A request: what the requester sends.
///
/// ```text
/// offset  size  field
/// 0       1     kind = 16
/// 1       8     request id, u64
/// 9       1     protocol tag
/// 10      1     application only: name length n, 1..=64
/// 11      n     application only: name, printable ASCII
/// ..      rest  body: snappy frame (see `snappy`), uncompressed ≤ the protocol's request limit
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Request {
    /// Echoed in every part of the response.
    pub id: RequestId,
    /// The protocol.
    pub protocol: ProtocolId,
    /// The uncompressed body (compressed on the wire).
    pub body: Vec<u8>,
}

impl Request {
    /// Appends the encoding to `out`.
    ///
    /// # Panics
    /// If the body exceeds the protocol's request limit: we never send one.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(
            self.body.len() <= self.protocol.request_bytes_max(),
            "{} request body of {} bytes exceeds its limit",
            self.protocol,
            self.body.len()
        );
        out.push(REQUEST_KIND);
        out.extend_from_slice(&self.id.0.to_be_bytes());
        out.push(self.protocol.tag());
        if let ProtocolId::Application(name) = &self.protocol {
            out.push(name.length);
            out.extend_from_slice(name.as_bytes());
        }
        snappy::compress_into(&self.body, out);
    }

    /// The encoding as a new vector.
    #[allow(clippy::arithmetic_side_effects)] // Our own body, within its protocol's limit.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            REQUEST_HEADER_BYTES_MAX
                + snappy::LENGTH_PREFIX_BYTES
                + snappy::max_compressed_len(self.body.len()),
        );
        self.encode_into(&mut out);
        out
    }

    /// Decodes a whole request message (kind byte included) and decompresses
    /// its body within the protocol's limit. The body's own layout is checked
    /// later, by whoever serves the protocol.
    pub fn decode(bytes: &[u8]) -> Result<Request, ReqRespDecodeError> {
        let mut reader = Reader::new(bytes);
        expect_kind(&mut reader, REQUEST_KIND)?;
        let id = RequestId(reader.u64("request id")?);
        let protocol = read_protocol(&mut reader)?;
        let body = snappy::decompress(reader.rest(), protocol.request_bytes_max())?;
        Ok(Request { id, protocol, body })
    }

    /// The id of a request message, if the bytes get that far, so that even a
    /// request whose protocol or body is malformed can be answered.
    pub fn peek_id(bytes: &[u8]) -> Option<RequestId> {
        let mut reader = Reader::new(bytes);
        expect_kind(&mut reader, REQUEST_KIND).ok()?;
        reader.u64("request id").ok().map(RequestId)
    }

    /// The protocol of a request message, if the bytes get that far, so that
    /// a Goodbye whose body is malformed is still known as a Goodbye (and
    /// never answered).
    pub fn peek_protocol(bytes: &[u8]) -> Option<ProtocolId> {
        let mut reader = Reader::new(bytes);
        expect_kind(&mut reader, REQUEST_KIND).ok()?;
        reader.u64("request id").ok()?;
        read_protocol(&mut reader).ok()
    }
}

fn read_protocol(reader: &mut Reader<'_>) -> Result<ProtocolId, ReqRespDecodeError> {
    Ok(match reader.u8("protocol tag")? {
        1 => ProtocolId::Status,
        2 => ProtocolId::Ping,
        3 => ProtocolId::Metadata,
        4 => ProtocolId::Goodbye,
        5 => ProtocolId::BlocksByRange,
        6 => ProtocolId::BlocksByRoot,
        7 => ProtocolId::FindNode,
        8 => ProtocolId::PeerRecord,
        128 => {
            let length = reader.u8("protocol name length")?;
            let name = reader.bytes(usize::from(length), "protocol name")?;
            ProtocolId::Application(
                ProtocolName::from_bytes(name).ok_or(ReqRespDecodeError::InvalidProtocolName)?,
            )
        }
        other => return Err(ReqRespDecodeError::UnknownProtocol(other)),
    })
}

/// One part of a response. A response is zero or more success chunks, then
/// exactly one terminator: a [`ResponseEnd`] after success, or a single
/// chunk with an error code (which ends the response by itself).
///
/// ```text
/// offset  size  field
/// 0       1     kind = 17
/// 1       8     request id, u64
/// 9       1     result code, 0..=127
/// 10      rest  payload: snappy frame; code 0: ≤ the protocol's response
///               limit; other codes: an error message ≤ 256 bytes
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ResponseChunk {
    /// The request answered.
    pub id: RequestId,
    /// Success, or why not.
    pub code: ResultCode,
    /// The payload as on the wire: a snappy frame, checked against
    /// [`RESPONSE_PAYLOAD_BYTES_MAX`] (or [`ERROR_MESSAGE_BYTES_MAX`] for
    /// errors) but not yet decompressed, because only the tracker knows the
    /// protocol, and so the tighter limit, of the request it answers.
    pub compressed_payload: Vec<u8>,
}

impl ResponseChunk {
    /// A success chunk carrying `payload` (compressed here).
    pub fn success(id: RequestId, payload: &[u8]) -> ResponseChunk {
        assert!(
            payload.len() <= RESPONSE_PAYLOAD_BYTES_MAX,
            "a payload of {} bytes exceeds every protocol's limit",
            payload.len()
        );
        ResponseChunk {
            id,
            code: ResultCode::Success,
            compressed_payload: snappy::compress(payload),
        }
    }

    /// An error chunk with `code` and `message`, cut to [`ERROR_MESSAGE_BYTES_MAX`] bytes.
    ///
    /// # Panics
    /// If `code` is `Success`.
    pub fn error(id: RequestId, code: ResultCode, message: &str) -> ResponseChunk {
        assert!(!code.is_success(), "an error chunk needs an error code");
        let message = &message.as_bytes()[..message.len().min(ERROR_MESSAGE_BYTES_MAX)];
        ResponseChunk {
            id,
            code,
            compressed_payload: snappy::compress(message),
        }
    }

    /// The limit this chunk's payload is checked against on decoding.
    fn payload_bytes_max(code: ResultCode) -> usize {
        if code.is_success() {
            RESPONSE_PAYLOAD_BYTES_MAX
        } else {
            ERROR_MESSAGE_BYTES_MAX
        }
    }

    /// The uncompressed payload, refused if larger than `limit_bytes`.
    pub fn payload(&self, limit_bytes: usize) -> Result<Vec<u8>, ReqRespDecodeError> {
        self.as_ref().payload(limit_bytes)
    }

    /// For an error chunk: its message, with anything but printable ASCII
    /// and spaces replaced by `?` so it is safe to log.
    pub fn error_message(&self) -> Result<String, ReqRespDecodeError> {
        self.as_ref().error_message()
    }

    /// Appends the encoding of [`ResponseChunk::success`]`(id, payload)` to
    /// `out`, the payload compressed straight into place by `compressor`:
    /// the same bytes, without the chunk's own vector.
    ///
    /// # Panics
    /// As [`ResponseChunk::success`], if `payload` is above every protocol's limit.
    pub fn encode_success_into(
        id: RequestId,
        payload: &[u8],
        compressor: &mut snappy::Compressor,
        out: &mut Vec<u8>,
    ) {
        assert!(
            payload.len() <= RESPONSE_PAYLOAD_BYTES_MAX,
            "a payload of {} bytes exceeds every protocol's limit",
            payload.len()
        );
        out.push(RESPONSE_CHUNK_KIND);
        out.extend_from_slice(&id.0.to_be_bytes());
        out.push(ResultCode::Success.to_byte());
        compressor.compress_into(payload, out);
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(RESPONSE_CHUNK_KIND);
        out.extend_from_slice(&self.id.0.to_be_bytes());
        out.push(self.code.to_byte());
        out.extend_from_slice(&self.compressed_payload);
    }

    /// The encoding as a new vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            RESPONSE_CHUNK_HEADER_BYTES.saturating_add(self.compressed_payload.len()),
        );
        self.encode_into(&mut out);
        out
    }

    /// Decodes a whole chunk message (kind byte included). Checks the
    /// payload's frame (declared length within the code's limit, compressed
    /// length possible) without decompressing it.
    pub fn decode(bytes: &[u8]) -> Result<ResponseChunk, ReqRespDecodeError> {
        ResponseChunkRef::decode(bytes).map(|chunk| ResponseChunk {
            id: chunk.id,
            code: chunk.code,
            compressed_payload: chunk.compressed_payload.to_vec(),
        })
    }

    /// The chunk as a view of its bytes.
    pub fn as_ref(&self) -> ResponseChunkRef<'_> {
        ResponseChunkRef {
            id: self.id,
            code: self.code,
            compressed_payload: &self.compressed_payload,
        }
    }
}

/// A [`ResponseChunk`] whose payload is borrowed from the message it was
/// decoded from: a requester decompresses a chunk's payload straight from
/// the received bytes, without copying it into a vector first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ResponseChunkRef<'a> {
    /// The request answered.
    pub id: RequestId,
    /// Success, or why not.
    pub code: ResultCode,
    /// The payload as on the wire, checked as [`ResponseChunk::compressed_payload`] is.
    pub compressed_payload: &'a [u8],
}

impl<'a> ResponseChunkRef<'a> {
    /// [`ResponseChunk::decode`], the payload borrowed from `bytes`.
    pub fn decode(bytes: &'a [u8]) -> Result<ResponseChunkRef<'a>, ReqRespDecodeError> {
        let mut reader = Reader::new(bytes);
        expect_kind(&mut reader, RESPONSE_CHUNK_KIND)?;
        let id = RequestId(reader.u64("request id")?);
        let code = ResultCode::from_byte(reader.u8("result code")?)?;
        let payload = reader.rest();
        snappy::check_frame(payload, ResponseChunk::payload_bytes_max(code))?;
        Ok(ResponseChunkRef {
            id,
            code,
            compressed_payload: payload,
        })
    }

    /// The uncompressed payload, refused if larger than `limit_bytes`.
    pub fn payload(&self, limit_bytes: usize) -> Result<Vec<u8>, ReqRespDecodeError> {
        snappy::decompress(self.compressed_payload, limit_bytes).map_err(Into::into)
    }

    /// For an error chunk: its message, with anything but printable ASCII
    /// and spaces replaced by `?` so it is safe to log.
    pub fn error_message(&self) -> Result<String, ReqRespDecodeError> {
        let bytes = self.payload(ERROR_MESSAGE_BYTES_MAX)?;
        Ok(bytes
            .iter()
            .map(|&byte| {
                if byte == b' ' || is_printable_ascii(&[byte]) {
                    char::from(byte)
                } else {
                    '?'
                }
            })
            .collect())
    }
}

/// The end of a successful response: no more chunks follow.
///
/// ```text
/// offset  size  field
/// 0       1     kind = 18
/// 1       8     request id, u64
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ResponseEnd {
    /// The request answered.
    pub id: RequestId,
}

impl ResponseEnd {
    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(RESPONSE_END_KIND);
        out.extend_from_slice(&self.id.0.to_be_bytes());
    }

    /// The encoding as a new vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RESPONSE_END_BYTES);
        self.encode_into(&mut out);
        out
    }

    /// Decodes a whole end message (kind byte included).
    pub fn decode(bytes: &[u8]) -> Result<ResponseEnd, ReqRespDecodeError> {
        let mut reader = Reader::new(bytes);
        expect_kind(&mut reader, RESPONSE_END_KIND)?;
        let id = RequestId(reader.u64("request id")?);
        reader.finish()?;
        Ok(ResponseEnd { id })
    }
}

/// Any req/resp message, for a caller that dispatches on the kind byte.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ReqRespMessage {
    /// Kind 16.
    Request(Request),
    /// Kind 17.
    Chunk(ResponseChunk),
    /// Kind 18.
    End(ResponseEnd),
}

impl ReqRespMessage {
    /// Whether `kind` is one of the req/resp kinds.
    pub fn is_reqresp_kind(kind: u8) -> bool {
        matches!(kind, REQUEST_KIND | RESPONSE_CHUNK_KIND | RESPONSE_END_KIND)
    }

    /// Decodes a whole message, dispatching on its kind byte.
    pub fn decode(bytes: &[u8]) -> Result<ReqRespMessage, ReqRespDecodeError> {
        match bytes.first() {
            Some(&REQUEST_KIND) => Request::decode(bytes).map(ReqRespMessage::Request),
            Some(&RESPONSE_CHUNK_KIND) => ResponseChunk::decode(bytes).map(ReqRespMessage::Chunk),
            Some(&RESPONSE_END_KIND) => ResponseEnd::decode(bytes).map(ReqRespMessage::End),
            Some(&other) => Err(ReqRespDecodeError::UnknownKind(other)),
            None => Err(ReqRespDecodeError::Truncated { field: "kind" }),
        }
    }

    /// The encoding as a new vector.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ReqRespMessage::Request(request) => request.encode(),
            ReqRespMessage::Chunk(chunk) => chunk.encode(),
            ReqRespMessage::End(end) => end.encode(),
        }
    }
}

fn expect_kind(reader: &mut Reader<'_>, kind: u8) -> Result<(), ReqRespDecodeError> {
    match reader.u8("kind")? {
        byte if byte == kind => Ok(()),
        other => Err(ReqRespDecodeError::UnknownKind(other)),
    }
}

/// Whether every byte is printable ASCII other than space (`0x21..=0x7E`).
pub(super) fn is_printable_ascii(bytes: &[u8]) -> bool {
    bytes.iter().all(|byte| (0x21..=0x7E).contains(byte))
}

/// Reads fixed-width big-endian fields from peer bytes, never past the end.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    pub(super) fn bytes(
        &mut self,
        count: usize,
        field: &'static str,
    ) -> Result<&'a [u8], ReqRespDecodeError> {
        if self.rest.len() < count {
            return Err(ReqRespDecodeError::Truncated { field });
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(taken)
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], ReqRespDecodeError> {
        let Some((taken, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(ReqRespDecodeError::Truncated { field });
        };
        self.rest = rest;
        Ok(*taken)
    }

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, ReqRespDecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, ReqRespDecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, ReqRespDecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Bytes not yet read.
    pub(super) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Everything not yet read; the reader is done.
    pub(super) fn rest(self) -> &'a [u8] {
        self.rest
    }

    /// Ends reading: anything left over is an error.
    pub(super) fn finish(self) -> Result<(), ReqRespDecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ReqRespDecodeError::TrailingBytes {
                count: self.rest.len(),
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // Tests index their own fixtures.
mod tests {
    use super::*;

    fn app(name: &str) -> ProtocolId {
        ProtocolId::Application(ProtocolName::new(name).expect("valid name"))
    }

    #[test]
    fn requests_round_trip_for_every_protocol() {
        let bodies: Vec<(ProtocolId, Vec<u8>)> = vec![
            (ProtocolId::Status, vec![9; 88]),
            (ProtocolId::Ping, 7u64.to_be_bytes().to_vec()),
            (ProtocolId::Metadata, vec![]),
            (ProtocolId::Goodbye, 3u64.to_be_bytes().to_vec()),
            (ProtocolId::BlocksByRange, vec![1; 16]),
            (ProtocolId::BlocksByRoot, vec![2; 2 + 32 * 128]),
            (app("/myapp/echo/1"), b"hello".to_vec()),
            (app(&"x".repeat(64)), vec![5; APPLICATION_REQUEST_BYTES_MAX]),
        ];
        for (index, (protocol, body)) in bodies.into_iter().enumerate() {
            let request = Request {
                id: RequestId(u64::MAX - index as u64),
                protocol,
                body,
            };
            let bytes = request.encode();
            assert_eq!(Request::decode(&bytes), Ok(request.clone()));
            assert_eq!(Request::peek_id(&bytes), Some(request.id));
            assert_eq!(
                ReqRespMessage::decode(&bytes),
                Ok(ReqRespMessage::Request(request))
            );
        }
    }

    #[test]
    fn request_layout_is_kind_id_tag_name_then_frame() {
        let request = Request {
            id: RequestId(0x0102_0304_0506_0708),
            protocol: app("ab"),
            body: b"z".to_vec(),
        };
        let bytes = request.encode();
        assert_eq!(
            bytes[..13],
            [16, 1, 2, 3, 4, 5, 6, 7, 8, 128, 2, b'a', b'b']
        );
        assert_eq!(bytes[13..17], [0, 0, 0, 1], "uncompressed length");
        assert_eq!(snappy::decompress(&bytes[13..], 1).unwrap(), b"z");
    }

    #[test]
    fn malformed_requests_are_refused() {
        let good = Request {
            id: RequestId(1),
            protocol: ProtocolId::Ping,
            body: 5u64.to_be_bytes().to_vec(),
        }
        .encode();
        assert_eq!(
            Request::decode(&[]),
            Err(ReqRespDecodeError::Truncated { field: "kind" })
        );
        assert_eq!(
            Request::decode(&[17]),
            Err(ReqRespDecodeError::UnknownKind(17))
        );
        assert_eq!(
            Request::decode(&good[..5]),
            Err(ReqRespDecodeError::Truncated {
                field: "request id"
            })
        );
        assert_eq!(Request::peek_id(&good[..5]), None);
        assert_eq!(
            Request::decode(&good[..9]),
            Err(ReqRespDecodeError::Truncated {
                field: "protocol tag"
            })
        );
        assert_eq!(Request::peek_id(&good[..9]), Some(RequestId(1)));
        for tag in [0, 9, 127, 129, 255] {
            let mut bytes = good.clone();
            bytes[9] = tag;
            assert_eq!(
                Request::decode(&bytes),
                Err(ReqRespDecodeError::UnknownProtocol(tag))
            );
        }
        // Truncated body frame, trailing bytes after the snappy block.
        assert!(Request::decode(&good[..good.len() - 1]).is_err());
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0, 1]);
        assert!(Request::decode(&trailing).is_err());
        // A body larger than the protocol allows, whatever it compresses to.
        let oversize = Request {
            id: RequestId(1),
            protocol: ProtocolId::BlocksByRange,
            body: vec![0; 16],
        }
        .encode();
        let mut bytes = oversize.clone();
        bytes[9] = ProtocolId::Ping.tag();
        assert_eq!(
            Request::decode(&bytes),
            Err(ReqRespDecodeError::TooLarge {
                field: "declared uncompressed length",
                length: 16,
                limit: 8
            })
        );
    }

    #[test]
    fn application_names_are_bounded_printable_ascii() {
        assert!(ProtocolName::new("/a/b/1").is_some());
        assert!(ProtocolName::new(&"n".repeat(64)).is_some());
        assert!(ProtocolName::new(&"n".repeat(65)).is_none());
        assert!(ProtocolName::new("").is_none());
        assert!(ProtocolName::new("has space").is_none());
        assert!(ProtocolName::new("tab\t").is_none());
        assert!(ProtocolName::new("é").is_none());
        let mut bytes = vec![REQUEST_KIND, 0, 0, 0, 0, 0, 0, 0, 1, 128];
        // Zero-length name, a name with a control byte, a name cut short.
        for name in [&[0u8][..], &[2, b'a', 0x07], &[10, b'a', b'b']] {
            let mut message = bytes.clone();
            message.extend_from_slice(name);
            message.extend_from_slice(&snappy::compress(b""));
            assert!(Request::decode(&message).is_err(), "{name:?}");
        }
        bytes.push(65);
        bytes.extend_from_slice(&[b'a'; 65]);
        bytes.extend_from_slice(&snappy::compress(b""));
        assert_eq!(
            Request::decode(&bytes),
            Err(ReqRespDecodeError::InvalidProtocolName)
        );
    }

    #[test]
    fn a_success_chunk_encoded_in_place_is_the_chunk_s_encoding() {
        let mut compressor = snappy::Compressor::new();
        for payload in [
            vec![],
            b"payload".to_vec(),
            vec![1; RESPONSE_PAYLOAD_BYTES_MAX],
        ] {
            let mut out = vec![7];
            ResponseChunk::encode_success_into(RequestId(3), &payload, &mut compressor, &mut out);
            assert_eq!(
                out[1..],
                ResponseChunk::success(RequestId(3), &payload).encode()[..]
            );
        }
    }

    #[test]
    fn chunks_and_ends_round_trip() {
        let chunks = [
            ResponseChunk::success(RequestId(3), b"payload"),
            ResponseChunk::success(RequestId(0), &[]),
            ResponseChunk::success(RequestId(4), &vec![1; RESPONSE_PAYLOAD_BYTES_MAX]),
            ResponseChunk::error(RequestId(5), ResultCode::ResourceUnavailable, "slow down"),
            ResponseChunk::error(RequestId(6), ResultCode::Reserved(99), "future"),
        ];
        for chunk in chunks {
            let bytes = chunk.encode();
            assert_eq!(bytes[0], RESPONSE_CHUNK_KIND);
            assert_eq!(ResponseChunk::decode(&bytes), Ok(chunk.clone()));
            assert_eq!(
                ReqRespMessage::decode(&bytes),
                Ok(ReqRespMessage::Chunk(chunk))
            );
        }
        let end = ResponseEnd { id: RequestId(258) };
        assert_eq!(end.encode(), [18, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(ResponseEnd::decode(&end.encode()), Ok(end));
    }

    #[test]
    fn result_codes_decode_reserved_and_refuse_invalid() {
        for byte in 0..=127u8 {
            let code = ResultCode::from_byte(byte).unwrap();
            assert_eq!(code.to_byte(), byte);
            assert_eq!(code.is_success(), byte == 0);
            if byte >= 4 {
                assert_eq!(code, ResultCode::Reserved(byte));
            }
        }
        for byte in 128..=255u8 {
            assert_eq!(
                ResultCode::from_byte(byte),
                Err(ReqRespDecodeError::InvalidResultCode(byte))
            );
            let mut bytes = ResponseChunk::success(RequestId(1), b"x").encode();
            bytes[9] = byte;
            assert_eq!(
                ResponseChunk::decode(&bytes),
                Err(ReqRespDecodeError::InvalidResultCode(byte))
            );
        }
    }

    #[test]
    fn malformed_chunks_and_ends_are_refused() {
        let chunk = ResponseChunk::success(RequestId(1), b"abc").encode();
        assert_eq!(
            ResponseChunk::decode(&chunk[..9]),
            Err(ReqRespDecodeError::Truncated {
                field: "result code"
            })
        );
        assert_eq!(
            ResponseChunk::decode(&chunk[..12]),
            Err(ReqRespDecodeError::Truncated {
                field: "uncompressed length"
            })
        );
        // A success payload declared above every limit is refused before decompressing.
        let mut bytes = chunk[..10].to_vec();
        bytes.extend_from_slice(&(RESPONSE_PAYLOAD_BYTES_MAX as u32 + 1).to_be_bytes());
        bytes.push(0);
        assert!(matches!(
            ResponseChunk::decode(&bytes),
            Err(ReqRespDecodeError::TooLarge { .. })
        ));
        // An error message over 256 bytes likewise.
        let mut bytes = vec![RESPONSE_CHUNK_KIND, 0, 0, 0, 0, 0, 0, 0, 1, 2];
        bytes.extend_from_slice(&snappy::compress(&[b'e'; 257]));
        assert!(matches!(
            ResponseChunk::decode(&bytes),
            Err(ReqRespDecodeError::TooLarge { length: 257, .. })
        ));
        // Padding after the snappy data: more than any compression needs.
        let mut bytes = chunk.clone();
        bytes.extend_from_slice(&[0; 64]);
        assert!(matches!(
            ResponseChunk::decode(&bytes),
            Err(ReqRespDecodeError::CompressedTooLong { .. })
        ));
        let end = ResponseEnd { id: RequestId(1) }.encode();
        assert_eq!(
            ResponseEnd::decode(&end[..8]),
            Err(ReqRespDecodeError::Truncated {
                field: "request id"
            })
        );
        let mut trailing = end.to_vec();
        trailing.push(0);
        assert_eq!(
            ResponseEnd::decode(&trailing),
            Err(ReqRespDecodeError::TrailingBytes { count: 1 })
        );
        assert_eq!(
            ReqRespMessage::decode(&[3, 0]),
            Err(ReqRespDecodeError::UnknownKind(3))
        );
        assert_eq!(
            ReqRespMessage::decode(&[]),
            Err(ReqRespDecodeError::Truncated { field: "kind" })
        );
    }

    #[test]
    fn error_messages_are_cut_and_sanitised() {
        let chunk = ResponseChunk::error(RequestId(1), ResultCode::ServerError, &"x".repeat(300));
        assert_eq!(
            chunk.error_message().unwrap().len(),
            ERROR_MESSAGE_BYTES_MAX
        );
        let chunk =
            ResponseChunk::error(RequestId(1), ResultCode::ServerError, "bad\n\u{1b}[31mred");
        assert_eq!(chunk.error_message().unwrap(), "bad??[31mred");
    }
}
