//! The file source: a directory of JSON-lines files (or one file), read in name order,
//! for replays and comparisons with other engines. Each file is a partition; an
//! offset is a byte position in the file, so a range is exact and cheap to seek to.
//! Blank lines are skipped. Files that appear after the start are not picked up; files
//! that grow are read on. Files are memory-mapped (no copy out of the page cache);
//! truncating a file while Sluice reads it is not supported.

use std::fs::File;
use std::path::PathBuf;

use memmap2::Mmap;

use super::{check_options, PartitionReader, Source, SourceSettings};
use crate::error::{Error, Result};
use crate::sql::TableDef;

/// The files of one directory.
pub struct FileSource {
    root: PathBuf,
    files: Vec<PathBuf>,
    workers: usize,
}

impl FileSource {
    /// Lists the files `def`'s `path` names (hidden files are ignored).
    pub fn open(def: &TableDef, settings: &SourceSettings) -> Result<Self> {
        check_options(def, &["path"])?;
        let root = PathBuf::from(def.options.get("path").ok_or_else(|| {
            Error::option(
                format!("table {}", def.name),
                "the file connector needs path = 'DIR or FILE'",
            )
        })?);
        let files = if root.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
                .map_err(|e| Error::io("cannot list", &root, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            files.sort();
            files
        } else if root.is_file() {
            vec![root.clone()]
        } else {
            return Err(Error::option(
                format!("path of table {}", def.name),
                format!("{} is neither a file nor a directory", root.display()),
            ));
        };
        if files.is_empty() {
            return Err(Error::option(
                format!("path of table {}", def.name),
                format!(
                    "{} holds no files (write some with `sluice gen --output {}`)",
                    root.display(),
                    root.display()
                ),
            ));
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let workers = files
            .len()
            .min(settings.target_partitions.max(cores))
            .max(1);
        Ok(Self {
            root,
            files,
            workers,
        })
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("{} file(s) in {}", self.files.len(), self.root.display())
    }

    fn partitions(&self) -> usize {
        self.files.len()
    }

    fn start_offsets(&mut self) -> Result<Vec<i64>> {
        Ok(vec![0; self.files.len()])
    }

    fn available_ends(&mut self) -> Result<Vec<i64>> {
        self.files
            .iter()
            .map(|f| {
                std::fs::metadata(f)
                    .map(|m| m.len() as i64)
                    .map_err(|e| Error::io("cannot stat", f, e))
            })
            .collect()
    }

    fn readers(&mut self) -> Result<Vec<Box<dyn PartitionReader>>> {
        Ok(self
            .files
            .iter()
            .map(|f| {
                Box::new(FileReader {
                    path: f.clone(),
                    map: None,
                    released: 0,
                }) as Box<dyn PartitionReader>
            })
            .collect())
    }

    fn workers(&self) -> usize {
        self.workers
    }
}

/// Hands a line (without its line break) to `f` unless it is blank; says whether it did.
fn emit(f: &mut dyn FnMut(i64, &[u8]), offset: i64, line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return false;
    }
    f(offset, line);
    true
}

/// Reads one file through a read-only memory map: lines are handed out straight from
/// the page cache, with no copy into a read buffer (the kernel's copy was a quarter of
/// the time of a file-source run).
struct FileReader {
    path: PathBuf,
    map: Option<Mmap>,
    /// Bytes before this were handed back to the kernel (see `release`).
    released: usize,
}

impl FileReader {
    /// The file's bytes, mapped again when it grew past the current map.
    fn bytes(&mut self, end: i64) -> Result<&[u8]> {
        let stale = self.map.as_ref().is_none_or(|m| (m.len() as i64) < end);
        if stale {
            let file =
                File::open(&self.path).map_err(|e| Error::io("cannot open", &self.path, e))?;
            // SAFETY: the map is read-only and private to this reader. The file source
            // reads files that are complete or only appended to (documented); a file
            // truncated while it is read would make later reads of the lost pages fail.
            let map =
                unsafe { Mmap::map(&file) }.map_err(|e| Error::io("cannot map", &self.path, e))?;
            #[cfg(unix)]
            let _ = map.advise(memmap2::Advice::Sequential);
            self.map = Some(map);
            self.released = 0;
        }
        Ok(self.map.as_deref().unwrap_or_default())
    }

    /// Unmaps the whole pages before `upto` from this process (they stay in the page
    /// cache), so resident memory stays small however big the file is.
    fn release(&mut self, upto: usize) {
        #[cfg(unix)]
        if let Some(map) = &self.map {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
            let upto = upto / page * page;
            if upto > self.released {
                // SAFETY: nothing borrows the map between reads (payloads are copied
                // out by the callback), and a read-only file map reads the same bytes
                // back from the file if touched again.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        self.released,
                        upto - self.released,
                    )
                };
                self.released = upto;
            }
        }
    }
}

impl PartitionReader for FileReader {
    fn read(
        &mut self,
        start: i64,
        end: i64,
        max_records: u64,
        f: &mut dyn FnMut(i64, &[u8]),
    ) -> Result<i64> {
        let data = self.bytes(end)?;
        let end = (end.max(0) as usize).min(data.len());
        let mut pos = (start.max(0) as usize).min(end);
        let mut n = 0;
        // A line that starts before `end` is read whole, even past `end` (the file grew
        // mid-line after it was measured); a last line without a line break ends with
        // the file.
        while pos < end && n < max_records {
            let rest = &data[pos..];
            let (line, next) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], pos + i + 1),
                None => (rest, data.len()),
            };
            n += u64::from(emit(f, pos as i64, line));
            pos = next;
        }
        self.release(pos);
        Ok(pos as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(r: &mut FileReader, start: i64, end: i64, max: u64) -> (Vec<(i64, String)>, i64) {
        let mut got = Vec::new();
        let next = r
            .read(start, end, max, &mut |o, line| {
                got.push((o, String::from_utf8_lossy(line).into_owned()))
            })
            .unwrap();
        (got, next)
    }

    #[test]
    fn lines_come_with_their_byte_offsets_across_reads_and_growth() {
        let path = std::env::temp_dir().join(format!("sluice-file-{}.jsonl", std::process::id()));
        std::fs::write(&path, b"{\"a\":1}\r\n\n  \n{\"a\":2}\n{\"a\":3}").unwrap();
        let mut r = FileReader {
            path: path.clone(),
            map: None,
            released: 0,
        };
        let len = std::fs::metadata(&path).unwrap().len() as i64;
        // Two records at most: blank lines are skipped and not counted.
        let (got, next) = read_all(&mut r, 0, len, 2);
        assert_eq!(got, [(0, "{\"a\":1}".into()), (13, "{\"a\":2}".into())]);
        assert_eq!(next, 21);
        // The last line has no line break: it ends with the file.
        let (got, next) = read_all(&mut r, next, len, 10);
        assert_eq!(got, [(21, "{\"a\":3}".into())]);
        assert_eq!(next, len);
        // The file grows: the reader maps it again and goes on from where it was.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"\n{\"a\":4}\n").unwrap();
        let grown = std::fs::metadata(&path).unwrap().len() as i64;
        let (got, next) = read_all(&mut r, next, grown, 10);
        assert_eq!(got, [(29, "{\"a\":4}".into())]);
        assert_eq!(next, grown);
        // A range that starts mid-file reads from there (a replay after a restart).
        let mut fresh = FileReader {
            path: path.clone(),
            map: None,
            released: 0,
        };
        let (got, _) = read_all(&mut fresh, 13, grown, 1);
        assert_eq!(got, [(13, "{\"a\":2}".into())]);
        std::fs::remove_file(&path).unwrap();
    }
}
