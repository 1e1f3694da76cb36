//! The file source: a directory of JSON-lines files (or one file), read in name order,
//! for replays and comparisons with other engines. Each file is a partition; an
//! offset is a byte position in the file, so a range is exact and cheap to seek to.
//! Blank lines are skipped. Files that appear after the start are not picked up.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;

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
                    reader: None,
                    pos: 0,
                    line: Vec::new(),
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

struct FileReader {
    path: PathBuf,
    reader: Option<BufReader<File>>,
    pos: i64,
    line: Vec<u8>,
}

impl PartitionReader for FileReader {
    fn read(
        &mut self,
        start: i64,
        end: i64,
        max_records: u64,
        f: &mut dyn FnMut(i64, &[u8]),
    ) -> Result<i64> {
        if self.reader.is_none() || self.pos != start {
            let mut file =
                File::open(&self.path).map_err(|e| Error::io("cannot open", &self.path, e))?;
            file.seek(SeekFrom::Start(start as u64))
                .map_err(|e| Error::io("cannot seek in", &self.path, e))?;
            self.reader = Some(BufReader::with_capacity(1 << 20, file));
            self.pos = start;
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(self.pos);
        };
        let mut n = 0;
        // Lines are handed out straight from the read buffer; only a line that spans
        // two buffer fills is copied.
        while self.pos < end && n < max_records {
            let buf = reader
                .fill_buf()
                .map_err(|e| Error::io("cannot read", &self.path, e))?;
            if buf.is_empty() {
                // A last line without a line break; its bytes are already counted in pos.
                if !self.line.is_empty() {
                    emit(f, self.pos - self.line.len() as i64, &self.line);
                    self.line.clear();
                }
                break;
            }
            match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    let start = self.pos - self.line.len() as i64;
                    let used = if self.line.is_empty() {
                        emit(f, start, &buf[..i])
                    } else {
                        self.line.extend_from_slice(&buf[..i]);
                        let used = emit(f, start, &self.line);
                        self.line.clear();
                        used
                    };
                    n += u64::from(used);
                    self.pos += i as i64 + 1;
                    reader.consume(i + 1);
                }
                None => {
                    let len = buf.len();
                    self.line.extend_from_slice(buf);
                    self.pos += len as i64;
                    reader.consume(len);
                }
            }
        }
        Ok(self.pos)
    }
}
