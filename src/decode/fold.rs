//! One pass over a record's bytes for the prefilter: does a literal occur, ignoring
//! ASCII case, and is the record "clean" (pure ASCII, no backslash), so that a miss
//! proves the record cannot match?
//!
//! Case is folded by setting bit 0x20 of every byte: the two cases of a letter become
//! the same byte, so a case-insensitive match is always found. Some non-letters fold
//! together too (`@` and `` ` ``), which can only add candidates that then get
//! decoded: the screen never drops a match. On x86_64 the scan is AVX2 when the CPU
//! has it (32 candidate positions per step) and SSE2 otherwise (16): the first and last byte of
//! the literal are compared at once (memchr's "packed pair" idea), and candidates are
//! then checked byte by byte.

/// A literal to look for, folded.
#[derive(Debug, Clone)]
pub struct FoldedLiteral {
    folded: Vec<u8>,
    /// AVX2 is available (checked once): 32 positions per step instead of 16.
    #[cfg(target_arch = "x86_64")]
    avx2: bool,
}

/// What one scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// The literal occurs (ignoring ASCII case).
    pub found: bool,
    /// Every byte is ASCII and none is a backslash. Only meaningful when not found
    /// (a scan stops at the first match).
    pub clean: bool,
}

#[inline]
fn fold(b: u8) -> u8 {
    b | 0x20
}

impl FoldedLiteral {
    /// `literal` must not be empty.
    pub fn new(literal: &[u8]) -> Self {
        Self {
            folded: literal.iter().copied().map(fold).collect(),
            #[cfg(target_arch = "x86_64")]
            avx2: std::arch::is_x86_feature_detected!("avx2"),
        }
    }

    /// Scans `hay` once.
    pub fn scan(&self, hay: &[u8]) -> Scan {
        #[cfg(target_arch = "x86_64")]
        {
            if self.avx2 {
                // SAFETY: AVX2 was detected at run time; loads stay inside `hay`.
                return unsafe { self.scan_avx2(hay) };
            }
            // SAFETY: SSE2 is part of the x86_64 baseline; loads stay inside `hay`.
            unsafe { self.scan_sse2(hay) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.scan_scalar(hay)
        }
    }

    fn matches_at(&self, hay: &[u8], pos: usize) -> bool {
        hay[pos..pos + self.folded.len()]
            .iter()
            .zip(&self.folded)
            .all(|(&h, &n)| fold(h) == n)
    }

    /// Byte by byte: candidates and cleanliness.
    fn scan_scalar(&self, hay: &[u8]) -> Scan {
        let m = self.folded.len();
        let mut clean = true;
        for (i, &b) in hay.iter().enumerate() {
            if b >= 0x80 || b == b'\\' {
                clean = false;
            }
            if i + m <= hay.len() && fold(b) == self.folded[0] && self.matches_at(hay, i) {
                return Scan { found: true, clean };
            }
        }
        Scan {
            found: false,
            clean,
        }
    }

    /// Whether a candidate of `mask` (bit j: position `at + j`) is a match.
    fn any_match(&self, hay: &[u8], at: usize, mut mask: u32) -> bool {
        while mask != 0 {
            if self.matches_at(hay, at + mask.trailing_zeros() as usize) {
                return true;
            }
            mask &= mask - 1;
        }
        false
    }
}

/// The packed-pair scan for one vector width: `$width` candidate positions per step,
/// the last step overlapping the one before it so no record of `$width + k` bytes or
/// more needs a tail; shorter records go to `$shorter`.
#[cfg(target_arch = "x86_64")]
macro_rules! packed_pair_scan {
    ($name:ident, $feature:literal, $width:literal, $vec:ty, $shorter:ident,
     $set1:ident, $zero:ident, $loadu:ident, $or:ident, $and:ident, $cmpeq:ident,
     $movemask:ident) => {
        impl FoldedLiteral {
            #[target_feature(enable = $feature)]
            unsafe fn $name(&self, hay: &[u8]) -> Scan {
                use std::arch::x86_64::*;
                let k = self.folded.len() - 1;
                let n = hay.len();
                if n < k + $width {
                    return self.$shorter(hay);
                }
                let first = $set1(self.folded[0] as i8);
                let last = $set1(self.folded[k] as i8);
                let bit = $set1(0x20);
                let backslash = $set1(b'\\' as i8);
                let mut dirty = $zero();
                let final_step = n - k - $width;
                let mut i = 0;
                loop {
                    let p = hay.as_ptr().add(i);
                    let a = $loadu(p as *const $vec);
                    let b = $loadu(p.add(k) as *const $vec);
                    // High bit set: non-ASCII; 0xFF where a backslash is. `b` covers the
                    // last k bytes, which no `a` reaches.
                    dirty = $or(dirty, $or(a, $cmpeq(a, backslash)));
                    dirty = $or(dirty, $or(b, $cmpeq(b, backslash)));
                    let eq = $and($cmpeq($or(a, bit), first), $cmpeq($or(b, bit), last));
                    if self.any_match(hay, i, $movemask(eq) as u32) {
                        return Scan {
                            found: true,
                            clean: false,
                        };
                    }
                    if i == final_step {
                        break;
                    }
                    i = (i + $width).min(final_step);
                }
                Scan {
                    found: false,
                    clean: $movemask(dirty) == 0,
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
packed_pair_scan!(
    scan_sse2,
    "sse2",
    16,
    __m128i,
    scan_scalar,
    _mm_set1_epi8,
    _mm_setzero_si128,
    _mm_loadu_si128,
    _mm_or_si128,
    _mm_and_si128,
    _mm_cmpeq_epi8,
    _mm_movemask_epi8
);
#[cfg(target_arch = "x86_64")]
packed_pair_scan!(
    scan_avx2,
    "avx2",
    32,
    __m256i,
    scan_sse2,
    _mm256_set1_epi8,
    _mm256_setzero_si256,
    _mm256_loadu_si256,
    _mm256_or_si256,
    _mm256_and_si256,
    _mm256_cmpeq_epi8,
    _mm256_movemask_epi8
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious way: lower-case a copy, search, check every byte.
    fn reference(hay: &[u8], lit: &[u8]) -> Scan {
        let folded: Vec<u8> = hay.iter().map(|&b| fold(b)).collect();
        let needle: Vec<u8> = lit.iter().map(|&b| fold(b)).collect();
        Scan {
            found: folded.windows(needle.len()).any(|w| w == needle.as_slice()),
            clean: hay.is_ascii() && !hay.contains(&b'\\'),
        }
    }

    #[test]
    fn agrees_with_the_obvious_scan_on_random_records() {
        let alphabet = b"cCrRaAsShH \\{}\"x\x80\xe9:@`";
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..20_000 {
            let len = rng.usize(0..120);
            let hay: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            for lit in [&b"crash"[..], b"c", b"sH", b"a@"] {
                let want = reference(&hay, lit);
                let fast = FoldedLiteral::new(lit);
                let mut scans = vec![fast.scan(&hay), fast.scan_scalar(&hay)];
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: SSE2 is baseline on x86_64; AVX2 only when detected.
                    scans.push(unsafe { fast.scan_sse2(&hay) });
                    if std::arch::is_x86_feature_detected!("avx2") {
                        scans.push(unsafe { fast.scan_avx2(&hay) });
                    }
                }
                for got in scans {
                    assert_eq!(got.found, want.found, "{hay:?} {lit:?}");
                    if !got.found {
                        assert_eq!(got.clean, want.clean, "{hay:?} {lit:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn finds_matches_in_any_case_at_any_position() {
        let lit = FoldedLiteral::new(b"crash");
        for pos in 0..40 {
            let mut hay = vec![b'x'; 45];
            hay[pos..pos + 5].copy_from_slice(b"CrAsH");
            assert!(lit.scan(&hay).found, "at {pos}");
            hay[pos + 2] = b'o';
            let s = lit.scan(&hay);
            assert!(!s.found && s.clean, "at {pos}");
        }
        // A dirty byte anywhere, including the last 16, is seen.
        for pos in 0..45 {
            let mut hay = vec![b'x'; 45];
            hay[pos] = b'\\';
            assert!(!lit.scan(&hay).clean, "backslash at {pos}");
            hay[pos] = 0xC3;
            assert!(!lit.scan(&hay).clean, "non-ASCII at {pos}");
        }
    }
}
