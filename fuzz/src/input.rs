//! Reading a fuzzer's bytes as a sequence of choices.
//!
//! The fuzzer mutates flat bytes; a target reads them as small numbers and slices, front to
//! back. Once the bytes run out every read yields zero or an empty slice, so any input is a
//! valid (if short) scenario and a mutation changes only what follows the byte it touched.

/// A cursor over the fuzzer's input.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from the start.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        let (b, rest) = self.data.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.data = rest;
        b
    }

    /// A little-endian u16 (zero-filled past the end).
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// A little-endian u32 (zero-filled past the end).
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    /// One of `items`, chosen by the next byte. `items` must not be empty.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.byte()) % items.len()]
    }

    /// The next `n` bytes, or all that is left.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A slice whose length is the next byte.
    pub fn short_slice(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte());
        self.take(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }
}

/// Builds inputs the way [`Input`] reads them, for seeds.
#[derive(Clone, Debug, Default)]
pub struct Script(pub Vec<u8>);

impl Script {
    /// Appends one byte.
    pub fn byte(&mut self, b: u8) -> &mut Script {
        self.0.push(b);
        self
    }

    /// Appends a u16 as [`Input::u16`] reads it.
    pub fn u16(&mut self, v: u16) -> &mut Script {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a slice as [`Input::short_slice`] reads it (at most 255 bytes).
    pub fn short_slice(&mut self, bytes: &[u8]) -> &mut Script {
        let n = bytes.len().min(255);
        self.0.push(n as u8);
        self.0.extend_from_slice(&bytes[..n]);
        self
    }

    /// Appends raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Script {
        self.0.extend_from_slice(bytes);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_zero_and_empty() {
        let mut i = Input::new(&[7, 1, 2]);
        assert_eq!(i.byte(), 7);
        assert_eq!(i.u16(), 0x0201);
        assert_eq!(i.byte(), 0);
        assert_eq!(i.u32(), 0);
        assert_eq!(i.short_slice(), &[] as &[u8]);
        assert!(i.is_empty());
    }

    #[test]
    fn a_script_reads_back_as_written() {
        let mut s = Script::default();
        s.byte(3).u16(513).short_slice(b"abc");
        let mut i = Input::new(&s.0);
        assert_eq!((i.byte(), i.u16(), i.short_slice()), (3, 513, &b"abc"[..]));
    }
}
