//! Incremental decoders for the two length-prefixed layers.

use super::{DecodeError, MESSAGE_LENGTH_PREFIX_BYTES, NOISE_LENGTH_PREFIX_BYTES};
use crate::limits::{
    HANDSHAKE_MESSAGE_BYTES_MAX, MESSAGE_BYTES_MAX, NOISE_MESSAGE_BYTES_MAX, NOISE_TAG_BYTES,
    REASSEMBLY_BUFFER_KEPT_BYTES_MAX,
};
use std::ops::Range;

/// Splits the wire byte stream into Noise messages (`u16` big-endian length, then that many bytes).
///
/// Holds at most one partial message ([`crate::limits::RECEIVE_BUFFER_BYTES_MAX`] bytes).
#[derive(Debug, Default)]
pub struct NoiseFrameDecoder {
    /// The bytes of a message not yet complete, prefix included.
    partial: Vec<u8>,
    /// Smallest acceptable message: 1 during the handshake (message 1 is an
    /// ephemeral key), the AEAD tag length once in transport mode.
    minimum_bytes: usize,
    /// Largest acceptable message: a handshake message during the handshake,
    /// any Noise message once in transport mode.
    maximum_bytes: usize,
}

impl NoiseFrameDecoder {
    /// A decoder for handshake messages (any length from 1).
    pub fn new() -> NoiseFrameDecoder {
        NoiseFrameDecoder {
            partial: Vec::new(),
            minimum_bytes: 1,
            maximum_bytes: HANDSHAKE_MESSAGE_BYTES_MAX,
        }
    }

    /// From now on refuse messages shorter than an AEAD tag.
    pub fn enter_transport_mode(&mut self) {
        self.minimum_bytes = NOISE_TAG_BYTES;
        self.maximum_bytes = NOISE_MESSAGE_BYTES_MAX;
    }

    /// Bytes held for an incomplete message.
    pub fn buffered_bytes(&self) -> usize {
        self.partial.len()
    }

    /// Feeds `input`, calling `on_message` with each complete Noise message
    /// (without its prefix) in order. Stops at the first error, from the
    /// framing or from `on_message`; the decoder is then unusable (close the connection).
    // The declared length is a u16 (and checked against the decoder's
    // maximum by `declared_length`) before it is added to, and `partial`
    // never holds more than prefix plus that: no sum or difference can wrap.
    #[allow(clippy::arithmetic_side_effects)]
    pub fn decode<E: From<DecodeError>>(
        &mut self,
        mut input: &[u8],
        mut on_message: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while !input.is_empty() {
            if self.partial.is_empty() {
                // Fast path: whole messages straight from the input, no copy.
                if input.len() >= NOISE_LENGTH_PREFIX_BYTES {
                    let length = self.declared_length(&input[..NOISE_LENGTH_PREFIX_BYTES])?;
                    let total = NOISE_LENGTH_PREFIX_BYTES + length;
                    if input.len() >= total {
                        on_message(&input[NOISE_LENGTH_PREFIX_BYTES..total])?;
                        input = &input[total..];
                        continue;
                    }
                }
                self.partial.extend_from_slice(input);
                return Ok(());
            }
            // Slow path: complete the partial message.
            if self.partial.len() < NOISE_LENGTH_PREFIX_BYTES {
                let take = (NOISE_LENGTH_PREFIX_BYTES - self.partial.len()).min(input.len());
                self.partial.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.partial.len() < NOISE_LENGTH_PREFIX_BYTES {
                    return Ok(());
                }
            }
            let length = self.declared_length(&self.partial[..NOISE_LENGTH_PREFIX_BYTES])?;
            let total = NOISE_LENGTH_PREFIX_BYTES + length;
            let take = (total - self.partial.len()).min(input.len());
            self.partial.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.partial.len() == total {
                let message = std::mem::take(&mut self.partial);
                on_message(&message[NOISE_LENGTH_PREFIX_BYTES..])?;
                // Keep the allocation for the next partial message.
                self.partial = message;
                self.partial.clear();
            }
        }
        Ok(())
    }

    fn declared_length(&self, prefix: &[u8]) -> Result<usize, DecodeError> {
        let length = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if length < self.minimum_bytes {
            return Err(DecodeError::NoiseMessageTooShort { length });
        }
        if length > self.maximum_bytes {
            return Err(DecodeError::NoiseMessageTooLong { length });
        }
        Ok(length)
    }
}

/// Reassembles logical messages (`u32` big-endian length, then that many
/// bytes) from the decrypted plaintext stream, which may split them anywhere.
#[derive(Debug, Default)]
pub struct MessageReassembler {
    /// Bytes of the length prefix read so far.
    prefix: [u8; MESSAGE_LENGTH_PREFIX_BYTES],
    prefix_bytes: usize,
    /// The declared length of the message being read, once the prefix is complete.
    declared_bytes: Option<usize>,
    /// The body read so far; grows only with bytes that arrived.
    body: Vec<u8>,
}

impl MessageReassembler {
    /// An empty reassembler.
    pub fn new() -> MessageReassembler {
        MessageReassembler::default()
    }

    /// Bytes held for an incomplete message.
    #[allow(clippy::arithmetic_side_effects)] // Both are at most MESSAGE_BYTES_MAX.
    #[allow(clippy::arithmetic_side_effects)] // Both are at most MESSAGE_BYTES_MAX.
    pub fn buffered_bytes(&self) -> usize {
        self.prefix_bytes + self.body.len()
    }

    /// Feeds plaintext, appending each complete message body to `messages`
    /// and calling `on_message` with where it lies there. Stops at the
    /// first error; the reassembler is then unusable.
    ///
    /// A message that took several pushes is handed over without a copy when
    /// `messages` is empty (the two buffers are swapped). The reassembler
    /// then keeps at most [`REASSEMBLY_BUFFER_KEPT_BYTES_MAX`] of capacity:
    /// the caller, not every connection, keeps a large buffer.
    // Lengths here are the declared length (checked against its maximum by
    // `declared_length`/`MESSAGE_BYTES_MAX` first) and prefix offsets below
    // their constant: no sum or difference can wrap.
    #[allow(clippy::arithmetic_side_effects)]
    pub fn push<E: From<DecodeError>>(
        &mut self,
        mut input: &[u8],
        messages: &mut Vec<u8>,
        mut on_message: impl FnMut(Range<usize>) -> Result<(), E>,
    ) -> Result<(), E> {
        while !input.is_empty() {
            let declared = match self.declared_bytes {
                Some(declared) => declared,
                None => {
                    let take = (MESSAGE_LENGTH_PREFIX_BYTES - self.prefix_bytes).min(input.len());
                    self.prefix[self.prefix_bytes..self.prefix_bytes + take]
                        .copy_from_slice(&input[..take]);
                    self.prefix_bytes += take;
                    input = &input[take..];
                    if self.prefix_bytes < MESSAGE_LENGTH_PREFIX_BYTES {
                        return Ok(());
                    }
                    let length = u32::from_be_bytes(self.prefix);
                    let length = usize::try_from(length).unwrap_or(usize::MAX);
                    if length == 0 || length > MESSAGE_BYTES_MAX {
                        return Err(DecodeError::MessageLength {
                            length: u64::from(u32::from_be_bytes(self.prefix)),
                        }
                        .into());
                    }
                    self.declared_bytes = Some(length);
                    // Fast path: the whole message is in the input, one copy.
                    if self.body.is_empty() && input.len() >= length {
                        let (message, rest) = input.split_at(length);
                        self.reset();
                        let start = messages.len();
                        messages.extend_from_slice(message);
                        on_message(start..messages.len())?;
                        input = rest;
                        continue;
                    }
                    length
                }
            };
            // The body grows only with bytes that arrived, never by the
            // declared length alone.
            let take = (declared - self.body.len()).min(input.len());
            self.body.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.body.len() == declared {
                let start = messages.len();
                if messages.is_empty() {
                    std::mem::swap(&mut self.body, messages);
                } else {
                    messages.extend_from_slice(&self.body);
                }
                self.reset();
                keep_at_most(&mut self.body, REASSEMBLY_BUFFER_KEPT_BYTES_MAX);
                on_message(start..messages.len())?;
            }
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.prefix_bytes = 0;
        self.declared_bytes = None;
        self.body.clear();
    }
}

/// Empties `buffer` and frees it when it holds more than `kept_bytes_max`
/// of capacity: a buffer reused from message to message stays bounded by
/// what the largest common message needs, not by the largest one seen.
pub fn keep_at_most(buffer: &mut Vec<u8>, kept_bytes_max: usize) {
    buffer.clear();
    if buffer.capacity() > kept_bytes_max {
        *buffer = Vec::new();
    }
}

/// Appends `message` to `out` with its `u32` length prefix.
pub fn append_length_prefixed(out: &mut Vec<u8>, message: &[u8]) {
    append_length_prefixed_with(out, |out| out.extend_from_slice(message));
}

/// Appends the message that `write` appends to `out`, with its `u32` length
/// prefix in front: what [`append_length_prefixed`] gives for those bytes,
/// written in place instead of through a vector of their own (a response
/// chunk is compressed straight into a connection's plaintext).
///
/// # Panics
/// If `write` appends nothing or more than [`MESSAGE_BYTES_MAX`] bytes, or
/// truncates `out`: we never send an empty or oversize message.
#[allow(clippy::arithmetic_side_effects)] // `out` grew by the prefix, so `start + prefix <= len`.
pub fn append_length_prefixed_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; MESSAGE_LENGTH_PREFIX_BYTES]);
    let body = start + MESSAGE_LENGTH_PREFIX_BYTES;
    write(out);
    assert!(out.len() >= body, "a message writer truncated the buffer");
    let length = out.len() - body;
    assert!(
        length != 0 && length <= MESSAGE_BYTES_MAX,
        "we never send an empty or oversize message"
    );
    // Cannot truncate: MESSAGE_BYTES_MAX fits in u32 (checked in codec/mod.rs).
    out[start..body].copy_from_slice(&(length as u32).to_be_bytes());
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // Tests index their own fixtures.
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::{RngCore, SeedableRng};

    fn noise_frames(messages: &[Vec<u8>]) -> Vec<u8> {
        let mut wire = Vec::new();
        for message in messages {
            wire.extend_from_slice(&(message.len() as u16).to_be_bytes());
            wire.extend_from_slice(message);
        }
        wire
    }

    fn decode_in_pieces(wire: &[u8], pieces: &[usize]) -> Result<Vec<Vec<u8>>, DecodeError> {
        let mut decoder = NoiseFrameDecoder::new();
        decoder.enter_transport_mode();
        let mut out = Vec::new();
        let mut rest = wire;
        for &piece in pieces.iter().chain(std::iter::once(&usize::MAX)) {
            let take = piece.min(rest.len());
            decoder.decode(&rest[..take], |message| {
                out.push(message.to_vec());
                Ok::<(), DecodeError>(())
            })?;
            rest = &rest[take..];
            if rest.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    #[test]
    fn handshake_mode_refuses_a_long_declared_length_from_its_prefix() {
        let mut decoder = NoiseFrameDecoder::new();
        let result = decoder.decode(&[0xff, 0xff, 1], |_| Ok::<(), DecodeError>(()));
        assert_eq!(
            result,
            Err(DecodeError::NoiseMessageTooLong { length: 65_535 })
        );
        let mut decoder = NoiseFrameDecoder::new();
        let result = decoder.decode(&[0xff], |_| Ok::<(), DecodeError>(()));
        assert_eq!(result, Ok(()));
        let result = decoder.decode(&[0xff], |_| Ok::<(), DecodeError>(()));
        assert_eq!(
            result,
            Err(DecodeError::NoiseMessageTooLong { length: 65_535 })
        );
    }

    #[test]
    fn noise_frames_survive_any_split() {
        let messages: Vec<Vec<u8>> = vec![vec![1; 16], vec![2; 300], vec![3; 65_535], vec![4; 17]];
        let wire = noise_frames(&messages);
        // One byte at a time.
        assert_eq!(
            decode_in_pieces(&wire, &vec![1; wire.len()]).unwrap(),
            messages
        );
        // All at once.
        assert_eq!(decode_in_pieces(&wire, &[]).unwrap(), messages);
        // Random splits.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..50 {
            let pieces: Vec<usize> = (0..64)
                .map(|_| 1 + (rng.next_u32() % 5000) as usize)
                .collect();
            assert_eq!(decode_in_pieces(&wire, &pieces).unwrap(), messages);
        }
    }

    #[test]
    fn transport_mode_refuses_messages_shorter_than_a_tag() {
        let mut decoder = NoiseFrameDecoder::new();
        decoder.enter_transport_mode();
        let result = decoder.decode(&[0, 3, 1, 2, 3], |_| Ok::<(), DecodeError>(()));
        assert_eq!(result, Err(DecodeError::NoiseMessageTooShort { length: 3 }));
        let mut decoder = NoiseFrameDecoder::new();
        let result = decoder.decode(&[0, 0], |_| Ok::<(), DecodeError>(()));
        assert_eq!(result, Err(DecodeError::NoiseMessageTooShort { length: 0 }));
    }

    #[test]
    fn noise_decoder_buffers_at_most_one_message() {
        let mut decoder = NoiseFrameDecoder::new();
        decoder.enter_transport_mode();
        let wire = noise_frames(&[vec![7; 65_535], vec![8; 65_535]]);
        let mut count = 0;
        for chunk in wire.chunks(1000) {
            decoder
                .decode(chunk, |_| {
                    count += 1;
                    Ok::<(), DecodeError>(())
                })
                .unwrap();
            assert!(decoder.buffered_bytes() <= crate::limits::RECEIVE_BUFFER_BYTES_MAX);
        }
        assert_eq!(count, 2);
    }

    /// Reassembles `stream` fed in pieces of `piece` bytes; with `per_push`
    /// the messages buffer is emptied before every push (as the node does
    /// for each read), else it collects every message back to back.
    fn reassemble_in_pieces(
        stream: &[u8],
        piece: usize,
        per_push: bool,
    ) -> Result<Vec<Vec<u8>>, DecodeError> {
        let mut reassembler = MessageReassembler::new();
        let mut buffer = Vec::new();
        let mut out = Vec::new();
        for chunk in stream.chunks(piece) {
            if per_push {
                buffer.clear();
            }
            let mut ranges = Vec::new();
            reassembler.push(chunk, &mut buffer, |range| {
                ranges.push(range);
                Ok::<(), DecodeError>(())
            })?;
            out.extend(ranges.into_iter().map(|range| buffer[range].to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn messages_reassemble_from_any_split() {
        let messages: Vec<Vec<u8>> = vec![vec![1], vec![2; 70_000], vec![3; 5], vec![4; 200_000]];
        let mut stream = Vec::new();
        for message in &messages {
            append_length_prefixed(&mut stream, message);
        }
        for piece in [1, 2, 3, 4, 5, 7, 1000, 65_519, stream.len()] {
            for per_push in [true, false] {
                assert_eq!(
                    reassemble_in_pieces(&stream, piece, per_push).unwrap(),
                    messages,
                    "piece {piece}, emptied per push: {per_push}"
                );
            }
        }
    }

    #[test]
    fn a_large_message_is_handed_over_whole_and_leaves_no_large_buffer_behind() {
        let large = 4 * REASSEMBLY_BUFFER_KEPT_BYTES_MAX;
        let mut reassembler = MessageReassembler::new();
        for round in 0..3u8 {
            let mut stream = Vec::new();
            append_length_prefixed(&mut stream, &vec![round; large]);
            append_length_prefixed(&mut stream, &[round; 3]);
            let mut buffer = Vec::new();
            let mut ranges = Vec::new();
            for chunk in stream.chunks(NOISE_MESSAGE_BYTES_MAX) {
                reassembler
                    .push(chunk, &mut buffer, |range| {
                        ranges.push(range);
                        Ok::<(), DecodeError>(())
                    })
                    .unwrap();
            }
            // The large message is the buffer that reassembled it, swapped
            // in whole; the small one after it is appended behind it.
            assert_eq!(ranges, [0..large, large..large + 3]);
            assert!(buffer[..large].iter().all(|&byte| byte == round));
            assert!(reassembler.body.capacity() <= REASSEMBLY_BUFFER_KEPT_BYTES_MAX);
        }
        // Behind other messages, a large one is copied after them.
        let mut stream = Vec::new();
        append_length_prefixed(&mut stream, &vec![7; large]);
        let mut buffer = vec![1];
        for chunk in stream.chunks(NOISE_MESSAGE_BYTES_MAX) {
            reassembler
                .push(chunk, &mut buffer, |_| Ok::<(), DecodeError>(()))
                .unwrap();
        }
        assert_eq!(buffer.len(), large + 1);
        assert!(reassembler.body.capacity() <= REASSEMBLY_BUFFER_KEPT_BYTES_MAX);
    }

    #[test]
    fn a_buffer_over_its_kept_bound_is_freed() {
        let mut buffer = Vec::with_capacity(REASSEMBLY_BUFFER_KEPT_BYTES_MAX + 1);
        buffer.push(1);
        keep_at_most(&mut buffer, REASSEMBLY_BUFFER_KEPT_BYTES_MAX);
        assert_eq!((buffer.len(), buffer.capacity()), (0, 0));
        let mut buffer = Vec::with_capacity(REASSEMBLY_BUFFER_KEPT_BYTES_MAX);
        buffer.push(1);
        keep_at_most(&mut buffer, REASSEMBLY_BUFFER_KEPT_BYTES_MAX);
        assert_eq!(buffer.len(), 0);
        assert_eq!(buffer.capacity(), REASSEMBLY_BUFFER_KEPT_BYTES_MAX);
    }

    #[test]
    fn a_message_written_in_place_is_framed_as_one_appended() {
        let mut appended = vec![9, 9];
        let mut written = appended.clone();
        for message in [vec![1], vec![2; 70_000]] {
            append_length_prefixed(&mut appended, &message);
            append_length_prefixed_with(&mut written, |out| out.extend_from_slice(&message));
        }
        assert_eq!(written, appended);
    }

    #[test]
    #[should_panic(expected = "empty or oversize")]
    fn writing_an_empty_message_in_place_is_a_bug() {
        append_length_prefixed_with(&mut Vec::new(), |_| {});
    }

    #[test]
    fn oversize_or_empty_message_is_refused_before_buffering() {
        let mut reassembler = MessageReassembler::new();
        let declared = (MESSAGE_BYTES_MAX as u32 + 1).to_be_bytes();
        let result = reassembler.push(&declared, &mut Vec::new(), |_| Ok::<(), DecodeError>(()));
        assert_eq!(
            result,
            Err(DecodeError::MessageLength {
                length: MESSAGE_BYTES_MAX as u64 + 1
            })
        );
        assert!(reassembler.buffered_bytes() <= MESSAGE_LENGTH_PREFIX_BYTES);
        let mut reassembler = MessageReassembler::new();
        let result = reassembler.push(
            &[0, 0, 0, 0],
            &mut Vec::new(),
            |_| Ok::<(), DecodeError>(()),
        );
        assert_eq!(result, Err(DecodeError::MessageLength { length: 0 }));
    }

    #[test]
    fn declared_length_alone_allocates_nothing() {
        let mut reassembler = MessageReassembler::new();
        let declared = (MESSAGE_BYTES_MAX as u32).to_be_bytes();
        reassembler
            .push(&declared, &mut Vec::new(), |_| Ok::<(), DecodeError>(()))
            .unwrap();
        reassembler
            .push(&[1, 2, 3], &mut Vec::new(), |_| Ok::<(), DecodeError>(()))
            .unwrap();
        assert_eq!(reassembler.buffered_bytes(), 7);
        assert!(reassembler.body.capacity() < 1024);
    }
}
