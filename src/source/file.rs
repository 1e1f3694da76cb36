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
        while self.pos < end && n < max_records {
            self.line.clear();
            let read = reader
                .read_until(b'\n', &mut self.line)
                .map_err(|e| Error::io("cannot read", &self.path, e))?;
            if read == 0 {
                break;
            }
            let offset = self.pos;
            self.pos += read as i64;
            let mut l = &self.line[..];
            while let [rest @ .., b'\n' | b'\r'] = l {
                l = rest;
            }
            if !l.iter().all(u8::is_ascii_whitespace) {
                f(offset, l);
                n += 1;
            }
        }
        Ok(self.pos)
    }
}
