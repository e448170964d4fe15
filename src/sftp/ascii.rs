//! `TYPE A` line endings (RFC 959 3.1.1.1): the network form of a text
//! file ends its lines with CRLF, an SFTP server stores them with LF.
//!
//! Pure and streaming: each converter keeps the one byte of state that a
//! CRLF split across two chunks needs, so a file converts the same
//! whatever its chunking, in memory bounded by the chunk.

/// Downloads: LF to CRLF (an LF already preceded by CR stays as it is).
#[derive(Debug, Default, Clone)]
pub struct ToNetwork {
    last_cr: bool,
}

impl ToNetwork {
    /// Appends the network form of `input` to `out`.
    pub fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 16);
        for &b in input {
            if b == b'\n' && !self.last_cr {
                out.push(b'\r');
            }
            out.push(b);
            self.last_cr = b == b'\r';
        }
    }
}

/// Uploads: CRLF to LF; a CR not followed by LF is kept.
#[derive(Debug, Default, Clone)]
pub struct FromNetwork {
    pending_cr: bool,
}

impl FromNetwork {
    /// Appends the stored form of `input` to `out` (a trailing CR waits for
    /// the next chunk).
    pub fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len());
        for &b in input {
            if std::mem::take(&mut self.pending_cr) && b != b'\n' {
                out.push(b'\r');
            }
            if b == b'\r' {
                self.pending_cr = true;
            } else {
                out.push(b);
            }
        }
    }

    /// The end of the upload: a CR still waiting is kept.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(chunks: &[&[u8]]) -> Vec<u8> {
        let mut c = ToNetwork::default();
        let mut out = Vec::new();
        for ch in chunks {
            c.convert(ch, &mut out);
        }
        out
    }

    fn up(chunks: &[&[u8]]) -> Vec<u8> {
        let mut c = FromNetwork::default();
        let mut out = Vec::new();
        for ch in chunks {
            c.convert(ch, &mut out);
        }
        c.finish(&mut out);
        out
    }

    #[test]
    fn tables() {
        assert_eq!(down(&[b"a\nb\n"]), b"a\r\nb\r\n");
        assert_eq!(down(&[b"a\r\nb"]), b"a\r\nb");
        assert_eq!(down(&[b"a\r", b"\nb\n"]), b"a\r\nb\r\n");
        assert_eq!(down(&[b"\n\n"]), b"\r\n\r\n");
        assert_eq!(up(&[b"a\r\nb\r\n"]), b"a\nb\n");
        assert_eq!(up(&[b"a\r", b"\nb"]), b"a\nb");
        assert_eq!(up(&[b"a\rb\r"]), b"a\rb\r");
        assert_eq!(up(&[b"a\r", b"", b"\r\n"]), b"a\r\n");
        assert_eq!(up(&[b"\n"]), b"\n");
    }

    proptest::proptest! {
        #[test]
        fn chunking_does_not_matter_and_round_trips(
            data in proptest::collection::vec(proptest::sample::select(vec![b'a', b'\r', b'\n']), 0..200),
            cut in 0usize..200,
        ) {
            let cut = cut.min(data.len());
            let whole_down = down(&[&data]);
            proptest::prop_assert_eq!(&down(&[&data[..cut], &data[cut..]]), &whole_down);
            let whole_up = up(&[&data]);
            proptest::prop_assert_eq!(&up(&[&data[..cut], &data[cut..]]), &whole_up);
            // Text stored with LF endings comes back as it was.
            let stored: Vec<u8> = up(&[&data]);
            let no_crlf = !stored.windows(2).any(|w| w == b"\r\n");
            if no_crlf {
                proptest::prop_assert_eq!(up(&[&down(&[&stored])]), stored);
            }
        }
    }
}
