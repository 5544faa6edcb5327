//! The outbound byte queue of one connection.
//!
//! # Design
//! The core hands over already framed and encrypted chunks (`Action::Send`).
//! Small writes are expensive, so chunks are coalesced two ways: a small chunk
//! is appended to the previous one while that stays under
//! [`COALESCE_BYTES_MAX`], and [`SendQueue::write_to`] hands up to
//! [`WRITE_SLICES_MAX`] chunks to one `writev` call. The queue itself does not
//! enforce `PENDING_SEND_BYTES_MAX`; the driver checks [`SendQueue::len`]
//! after every push and drops a connection whose peer does not read.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

/// A chunk is appended to the previous one while the result stays this small:
/// one copy of a few KiB is cheaper than one more iovec or syscall.
pub const COALESCE_BYTES_MAX: usize = 64 * 1024;

/// Chunks handed to one `write_vectored` call (Linux allows 1024; 64 × up to
/// 64 KiB already exceeds any socket buffer).
pub const WRITE_SLICES_MAX: usize = 64;

/// What a [`SendQueue::write_to`] call achieved.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WriteProgress {
    /// Everything queued was written.
    Flushed,
    /// The writer would block with bytes still queued: wait for writability.
    Blocked,
}

/// Bytes waiting to be written to one connection, in order.
#[derive(Default, Debug)]
pub struct SendQueue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    /// Bytes queued and not yet written, over all chunks.
    len: usize,
}

impl SendQueue {
    /// An empty queue.
    pub fn new() -> SendQueue {
        SendQueue::default()
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `bytes` after everything queued before.
    pub fn push(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if let Some(back) = self.chunks.back_mut() {
            if back.len() + bytes.len() <= COALESCE_BYTES_MAX {
                back.extend_from_slice(&bytes);
                return;
            }
        }
        self.chunks.push_back(bytes);
    }

    /// Writes as much as `writer` takes, in as few calls as possible.
    pub fn write_to<W: Write>(&mut self, writer: &mut W) -> io::Result<WriteProgress> {
        loop {
            if self.chunks.is_empty() {
                debug_assert_eq!(self.len, 0);
                return Ok(WriteProgress::Flushed);
            }
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES_MAX];
            let mut count = 0;
            for (index, chunk) in self.chunks.iter().take(WRITE_SLICES_MAX).enumerate() {
                let start = if index == 0 { self.front_written } else { 0 };
                slices[index] = IoSlice::new(&chunk[start..]);
                count += 1;
            }
            match writer.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.advance(written),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(WriteProgress::Blocked)
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Forgets the first `written` queued bytes.
    fn advance(&mut self, mut written: usize) {
        assert!(
            written <= self.len,
            "a writer reported more bytes than it was given"
        );
        self.len -= written;
        while written > 0 {
            // Cannot fail: `written <= len` and `len` counts exactly the bytes in `chunks`.
            let front = self.chunks.front().expect("queued bytes remain");
            let remaining = front.len() - self.front_written;
            if written < remaining {
                self.front_written += written;
                return;
            }
            written -= remaining;
            self.chunks.pop_front();
            self.front_written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `budget` bytes per call, then would block
    /// once `capacity` is used up, and counts its calls.
    struct Throttled {
        written: Vec<u8>,
        budget: usize,
        capacity: usize,
        calls: usize,
    }

    impl Write for Throttled {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(bytes)])
        }
        fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            let room = self.capacity - self.written.len();
            if room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut taken = 0;
            for slice in slices {
                let take = slice.len().min(self.budget - taken).min(room - taken);
                self.written.extend_from_slice(&slice[..take]);
                taken += take;
            }
            Ok(taken)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pattern(start: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|index| start.wrapping_add(index as u8))
            .collect()
    }

    #[test]
    fn small_chunks_coalesce_and_come_out_in_order() {
        let mut queue = SendQueue::new();
        let mut expected = Vec::new();
        for index in 0..1_000u32 {
            let chunk = pattern(index as u8, 50);
            expected.extend_from_slice(&chunk);
            queue.push(chunk);
        }
        queue.push(Vec::new());
        assert_eq!(queue.len(), 50_000);
        assert_eq!(
            queue.chunks.len(),
            1,
            "50 KB of 50-byte chunks fit one coalesced chunk"
        );
        let mut writer = Throttled {
            written: Vec::new(),
            budget: usize::MAX,
            capacity: usize::MAX,
            calls: 0,
        };
        assert_eq!(queue.write_to(&mut writer).unwrap(), WriteProgress::Flushed);
        assert_eq!(writer.calls, 1);
        assert_eq!(writer.written, expected);
        assert!(queue.is_empty());
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut queue = SendQueue::new();
        let mut expected = Vec::new();
        for index in 0..10u8 {
            let chunk = pattern(index, 40_000);
            expected.extend_from_slice(&chunk);
            queue.push(chunk);
        }
        let mut writer = Throttled {
            written: Vec::new(),
            budget: 7_777,
            capacity: 100_000,
            calls: 0,
        };
        assert_eq!(queue.write_to(&mut writer).unwrap(), WriteProgress::Blocked);
        assert_eq!(queue.len(), 300_000);
        writer.capacity = usize::MAX;
        assert_eq!(queue.write_to(&mut writer).unwrap(), WriteProgress::Flushed);
        assert_eq!(writer.written, expected);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn a_writer_that_writes_nothing_is_an_error() {
        struct Zero;
        impl Write for Zero {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut queue = SendQueue::new();
        queue.push(vec![1, 2, 3]);
        let error = queue.write_to(&mut Zero).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WriteZero);
    }
}
