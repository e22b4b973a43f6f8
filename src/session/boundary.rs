//! Where a byte stream stands against WebSocket frame edges.
//!
//! A session parks (`session::wire`) by dropping tungstenite's codec and
//! keeping the bare stream. That is only safe when the codec holds nothing:
//! no part of a frame in its read buffer and no fragmented message waiting for
//! its last fragment. tungstenite does not say, so `LazyRead` feeds every byte
//! it hands over through this tracker, which reads frame headers (at most 14
//! bytes each) and skips payloads by count.
//!
//! It only follows the stream; it never judges it. A malformed header is
//! tungstenite's to reject (the session then closes); here it merely leaves the
//! tracker away from an edge, which keeps the session from parking.

/// The header and payload position of the frame the stream is in.
#[derive(Debug, Default, Clone, Copy)]
pub struct Boundary {
    /// Header bytes seen of the current frame; 0 between headers.
    have: u8,
    /// The header's length once its second byte is seen (2 to 14).
    need: u8,
    /// The first header byte (FIN and opcode).
    first: u8,
    /// A data frame without FIN was seen and its final fragment was not.
    fragmented: bool,
    /// Payload bytes of the current frame still to come (while `have` is 0),
    /// or its extended length being assembled (while in the header).
    left: u64,
}

impl Boundary {
    /// Follow `bytes`, the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.have == 0 && self.left > 0 {
                let skip = usize::try_from(self.left).map_or(bytes.len(), |l| l.min(bytes.len()));
                self.left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            let b = bytes[0];
            bytes = &bytes[1..];
            match self.have {
                0 => self.first = b,
                1 => {
                    let len7 = b & 0x7f;
                    let ext = match len7 {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    let mask = if b & 0x80 != 0 { 4 } else { 0 };
                    self.need = 2 + ext + mask;
                    self.left = if ext == 0 { u64::from(len7) } else { 0 };
                }
                n => {
                    // Bytes 2.. are the extended length (if any), then the mask.
                    let ext_end = match self.need {
                        4 | 8 => 4,
                        10 | 14 => 10,
                        _ => 2,
                    };
                    if n < ext_end {
                        self.left = (self.left << 8) | u64::from(b);
                    }
                }
            }
            self.have += 1;
            if self.have == self.need {
                self.header_done();
            }
        }
    }

    fn header_done(&mut self) {
        self.have = 0;
        self.need = 0;
        // Control frames (opcode bit 3) may come between fragments and do not
        // end a fragmented message; data frames start or continue one.
        if self.first & 0x08 == 0 {
            self.fragmented = self.first & 0x80 == 0;
        }
    }

    /// True when every frame begun has ended and no fragmented message is
    /// open: a codec that has consumed all of it holds nothing.
    pub fn at_rest(&self) -> bool {
        self.have == 0 && self.left == 0 && !self.fragmented
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame: FIN/opcode byte, then the length forms.
    fn frame(first: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![first];
        if payload < 126 {
            f.push(0x80 | payload as u8);
        } else if payload <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(payload as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(payload as u64).to_be_bytes());
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', payload));
        f
    }

    fn fed_whole(stream: &[u8]) -> Boundary {
        let mut b = Boundary::default();
        b.feed(stream);
        b
    }

    /// Every split of the stream into two reads gives the same answer as
    /// one read, and every proper prefix ending inside a frame is not at rest.
    fn check_every_split(stream: &[u8], edges: &[usize]) {
        for cut in 0..=stream.len() {
            let mut b = Boundary::default();
            b.feed(&stream[..cut]);
            assert_eq!(b.at_rest(), edges.contains(&cut), "after {cut} bytes");
            b.feed(&stream[cut..]);
            assert_eq!(b.at_rest(), fed_whole(stream).at_rest(), "split at {cut}");
        }
    }

    #[test]
    fn each_length_form_ends_where_the_frame_ends() {
        for len in [0, 5, 125, 126, 300, 65_535, 65_536, 70_000] {
            let f = frame(0x81, len);
            let mut b = Boundary::default();
            b.feed(&f[..f.len() - 1]);
            assert!(!b.at_rest(), "{len}: one byte short");
            b.feed(&f[f.len() - 1..]);
            assert!(b.at_rest(), "{len}: whole");
        }
    }

    #[test]
    fn frames_back_to_back_are_at_rest_only_between_them() {
        let mut s = frame(0x81, 3);
        let a = s.len();
        s.extend(frame(0x82, 200));
        let b = s.len();
        s.extend(frame(0x89, 0)); // a ping
        check_every_split(&s, &[0, a, b, s.len()]);
    }

    #[test]
    fn a_fragmented_message_is_not_at_rest_until_its_final_fragment() {
        // Text without FIN, a ping between fragments, continuation, final.
        let mut s = frame(0x01, 4);
        let first = s.len();
        s.extend(frame(0x89, 2));
        let ping = s.len();
        s.extend(frame(0x00, 4));
        s.extend(frame(0x80, 4));
        let b = fed_whole(&s[..first]);
        assert!(!b.at_rest(), "open after the first fragment");
        assert!(
            !fed_whole(&s[..ping]).at_rest(),
            "a control frame does not end it"
        );
        check_every_split(&s, &[0, s.len()]);
    }

    #[test]
    fn an_unmasked_header_is_followed_too() {
        // Not valid from a client (tungstenite refuses it), but the edge is
        // still where the frame ends.
        let s = [0x81, 0x02, b'h', b'i'];
        check_every_split(&s, &[0, 4]);
    }
}
